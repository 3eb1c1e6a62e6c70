"""Calico's own YAML: every documented field of IPPool, BGPPeer, BGPConfiguration,
FelixConfiguration and Node is implemented, accepted with a warning, or refused by name."""

from __future__ import annotations

import pytest
import yaml
from pydantic import BaseModel

from datastore.errors import ValidationFailed
from datastore.models import (
    BGPConfigurationSpec,
    BGPPeerSpec,
    FelixConfigurationSpec,
    IPPoolSpec,
    NodeSpec,
    parse_noting,
)
from datastore.models.unimplemented import UNIMPLEMENTED
from lab.etcd import EtcdServer
from tests.test_felidctl import felidctl

# The spec fields of Calico's v3 API types (projectcalico/api, pkg/apis/projectcalico/v3, and
# libcalico-go's Node), by their JSON names.
CALICO_FIELDS: dict[str, tuple[type[BaseModel], str]] = {
    "IPPool": (
        IPPoolSpec,
        """cidr vxlanMode ipipMode natOutgoing disabled disableBGPExport blockSize
        nodeSelector namespaceSelector ipip nat-outgoing allowedUses assignmentMode""",
    ),
    "BGPPeer": (
        BGPPeerSpec,
        """node nodeSelector peerIP asNumber localASNumber peerSelector
        keepOriginalNextHop nextHopMode password sourceAddress maxRestartTime numAllowedLocalASNumbers
        ttlSecurity reachableBy filters localWorkloadSelector reversePeering""",
    ),
    "BGPConfiguration": (
        BGPConfigurationSpec,
        """logSeverityScreen nodeToNodeMeshEnabled asNumber
        serviceLoadBalancerIPs serviceExternalIPs serviceClusterIPs serviceLoadBalancerAggregation
        communities prefixAdvertisements listenPort nodeMeshPassword nodeMeshMaxRestartTime bindMode
        ignoredInterfaces localWorkloadPeeringIPV4 localWorkloadPeeringIPV6""",
    ),
    "Node": (
        NodeSpec,
        """bgp ipv4VXLANTunnelAddr vxlanTunnelMACAddr ipv6VXLANTunnelAddr
        vxlanTunnelMACAddrV6 orchRefs wireguard addresses""",
    ),
    "FelixConfiguration": (
        FelixConfigurationSpec,
        """useInternalDataplaneDriver dataplaneDriver
        dataplaneWatchdogTimeout ipv6Support routeRefreshInterval interfaceRefreshInterval
        iptablesRefreshInterval iptablesPostWriteCheckInterval iptablesLockFilePath iptablesLockTimeout
        iptablesLockProbeInterval featureDetectOverride featureGates ipsetsRefreshInterval maxIpsetSize
        iptablesBackend xdpRefreshInterval netlinkTimeout metadataAddr metadataPort openstackRegion
        interfacePrefix interfaceExclude chainInsertMode defaultEndpointToHostAction
        iptablesFilterAllowAction iptablesMangleAllowAction iptablesFilterDenyAction logPrefix logFilePath
        logSeverityFile logSeverityScreen logSeveritySys logDebugFilenameRegex ipipEnabled ipipMTU
        vxlanEnabled vxlanMTU vxlanMTUV6 vxlanPort vxlanVNI allowVXLANPacketsFromWorkloads
        allowIPIPPacketsFromWorkloads reportingInterval reportingTTL endpointReportingEnabled
        endpointReportingDelay endpointStatusPathPrefix iptablesMarkMask disableConntrackInvalidCheck
        healthEnabled healthHost healthPort healthTimeoutOverrides prometheusMetricsEnabled
        prometheusMetricsHost prometheusMetricsPort prometheusGoMetricsEnabled
        prometheusProcessMetricsEnabled prometheusWireGuardMetricsEnabled failsafeInboundHostPorts
        failsafeOutboundHostPorts kubeNodePortRanges policySyncPathPrefix usageReportingEnabled
        usageReportingInitialDelay usageReportingInterval natPortRange natOutgoingAddress
        natOutgoingExclusions deviceRouteSourceAddress deviceRouteSourceAddressIPv6 deviceRouteProtocol
        removeExternalRoutes programClusterRoutes ipForwarding externalNodesList debugMemoryProfilePath
        debugDisableLogDropping debugSimulateCalcGraphHangAfter debugSimulateDataplaneHangAfter
        debugSimulateDataplaneApplyDelay debugHost debugPort iptablesNATOutgoingInterfaceFilter
        sidecarAccelerationEnabled xdpEnabled genericXDPEnabled nftablesMode nftablesRefreshInterval
        nftablesFilterAllowAction nftablesMangleAllowAction nftablesFilterDenyAction nftablesMarkMask
        bpfEnabled bpfDisableUnprivileged bpfLogLevel bpfConntrackLogLevel bpfConntrackMode
        bpfConntrackTimeouts bpfLogFilters bpfCTLBLogFilter bpfDataIfacePattern bpfL3IfacePattern
        bpfConnectTimeLoadBalancingEnabled bpfConnectTimeLoadBalancing bpfHostNetworkedNATWithoutCTLB
        bpfExternalServiceMode bpfDSROptoutCIDRs bpfExtToServiceConnmark bpfKubeProxyIptablesCleanupEnabled
        bpfKubeProxyMinSyncPeriod bpfKubeProxyEndpointSlicesEnabled bpfPSNATPorts bpfMapSizeNATFrontend
        bpfMapSizeNATBackend bpfMapSizeNATAffinity bpfMapSizeRoute bpfMapSizeConntrack
        bpfMapSizePerCpuConntrack bpfMapSizeConntrackScaling bpfMapSizeConntrackCleanupQueue
        bpfMapSizeIPSets bpfMapSizeIfState bpfHostConntrackBypass bpfEnforceRPF bpfPolicyDebugEnabled
        bpfForceTrackPacketsFromIfaces bpfDisableGROForIfaces bpfExcludeCIDRsFromNAT bpfExportBufferSizeMB
        cgroupV2Path flowLogsPolicyEvaluationMode bpfRedirectToPeer bpfAttachType flowLogsFlushInterval
        flowLogsCollectorDebugTrace flowLogsGoldmaneServer flowLogsLocalReporter bpfProfiling routeSource
        routeTableRanges routeTableRange routeSyncDisabled wireguardEnabled wireguardEnabledV6
        wireguardThreadingEnabled wireguardListeningPort wireguardListeningPortV6
        wireguardRoutingRulePriority wireguardInterfaceName wireguardInterfaceNameV6 wireguardMTU
        wireguardMTUV6 wireguardHostEncryptionEnabled wireguardKeepAlive awsSrcDstCheck
        serviceLoopPrevention workloadSourceSpoofing mtuIfacePattern floatingIPs windowsManageFirewallRules
        goGCThreshold goMemoryLimitMB goMaxProcs requireMTUFile""",
    ),
}


def _aliases(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


@pytest.mark.parametrize("kind", sorted(CALICO_FIELDS))
def test_every_calico_field_is_decided(kind: str) -> None:
    model, names = CALICO_FIELDS[kind]
    implemented = _aliases(model)
    table = UNIMPLEMENTED[kind]
    undecided = [n for n in names.split() if n not in implemented and n not in table]
    assert not undecided, f"{kind}: neither implemented nor classed: {undecided}"
    both = [n for n in names.split() if n in implemented and n in table]
    assert not both, f"{kind}: implemented and also classed as unimplemented: {both}"


def _doc(kind: str, spec: dict[str, object], name: str = "default") -> dict[str, object]:
    return {"apiVersion": "projectcalico.org/v3", "kind": kind, "metadata": {"name": name}, "spec": spec}


@pytest.mark.parametrize(
    ("kind", "spec", "warning"),
    [
        (
            "FelixConfiguration",
            {"ipv6Support": False},
            "spec.ipv6Support: false accepted, not stored: felid is IPv4 only",
        ),
        ("FelixConfiguration", {"wireguardEnabled": False}, "spec.wireguardEnabled: false accepted"),
        ("FelixConfiguration", {"reportingInterval": "0s"}, "spec.reportingInterval: '0s' accepted"),
        (
            "FelixConfiguration",
            {"bpfLogLevel": "Debug"},
            "spec.bpfLogLevel: 'Debug' accepted, not stored: felid has no eBPF",
        ),
        ("FelixConfiguration", {"wireguardMTU": 1400}, "spec.wireguardMTU: 1400 accepted"),
        (
            "FelixConfiguration",
            {"iptablesRefreshInterval": "30s", "routeRefreshInterval": "30s"},
            "spec.iptablesRefreshInterval: '30s' accepted",
        ),
        ("FelixConfiguration", {"iptablesMarkMask": 0xFFFF0000}, "spec.iptablesMarkMask"),
        ("FelixConfiguration", {"workloadSourceSpoofing": "Disabled"}, "an address not its own"),
        (
            "IPPool",
            {"cidr": "10.1.0.0/16", "namespaceSelector": "all()"},
            "spec.namespaceSelector: 'all()' accepted",
        ),
        ("BGPConfiguration", {"bindMode": "NodeIP"}, "spec.bindMode: 'NodeIP' accepted"),
        (
            "BGPPeer",
            {"peerIP": "192.0.2.1", "asNumber": 64513, "reversePeering": "Auto"},
            "spec.reversePeering",
        ),
        ("Node", {"wireguard": {}}, "spec.wireguard: a dict accepted"),
    ],
)
def test_class_b_is_accepted_with_one_warning(kind: str, spec: dict[str, object], warning: str) -> None:
    resource, warnings = parse_noting(_doc(kind, spec, "node-1" if kind == "Node" else "default"))
    assert len(warnings) == 1 and warnings[0].startswith("spec.") and warning in warnings[0], warnings
    assert kind == resource.KIND


@pytest.mark.parametrize(
    ("kind", "spec", "field", "message"),
    [
        (
            "FelixConfiguration",
            {"ipv6Support": True},
            "spec.ipv6Support",
            "true is not supported yet: felid is IPv4 only",
        ),
        ("FelixConfiguration", {"wireguardEnabled": True}, "spec.wireguardEnabled", "has no WireGuard"),
        (
            "FelixConfiguration",
            {"bpfEnabled": True, "bpfLogLevel": "Debug"},
            "spec.bpfEnabled",
            "has no eBPF",
        ),
        ("FelixConfiguration", {"wireguardEnabled": True, "wireguardMTU": 1400}, "spec.wireguardEnabled", ""),
        ("FelixConfiguration", {"reportingInterval": "30s"}, "spec.reportingInterval", "accepted: 0s"),
        (
            "FelixConfiguration",
            {"iptablesRefreshInterval": "10s"},
            "spec.iptablesRefreshInterval",
            "routeRefreshInterval",
        ),
        ("FelixConfiguration", {"iptablesMarkMask": 0xFF}, "spec.iptablesMarkMask", "0x30000"),
        (
            "FelixConfiguration",
            {"dataplaneWatchdogTimeout": "90s"},
            "spec.dataplaneWatchdogTimeout",
            "no hang watchdog",
        ),
        (
            "IPPool",
            {"cidr": "10.1.0.0/16", "namespaceSelector": "team == 'a'"},
            "spec.namespaceSelector",
            "not supported yet",
        ),
        ("IPPool", {"cidr": "10.1.0.0/16", "ipip": {"enabled": True}}, "spec.ipip", "ipipMode"),
        ("BGPConfiguration", {"bindMode": "None"}, "spec.bindMode", "node's address only"),
        (
            "BGPConfiguration",
            {"localWorkloadPeeringIPV4": "169.254.0.1"},
            "spec.localWorkloadPeeringIPV4",
            "",
        ),
        (
            "BGPPeer",
            {"peerIP": "192.0.2.1", "asNumber": 64513, "localWorkloadSelector": "all()"},
            "spec.localWorkloadSelector",
            "",
        ),
        ("Node", {"wireguard": {"interfaceIPv4Address": "10.9.0.1"}}, "spec.wireguard", "has no WireGuard"),
    ],
)
def test_class_c_is_refused_naming_the_field(
    kind: str, spec: dict[str, object], field: str, message: str
) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_noting(_doc(kind, spec, "node-1" if kind == "Node" else "default"))
    assert refused.value.field == field, refused.value
    assert "not supported yet" in refused.value.message and message in refused.value.message, refused.value


def test_a_field_calico_does_not_have_is_still_unknown() -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_noting(_doc("FelixConfiguration", {"ipv6Suport": False}))
    assert (refused.value.field, refused.value.message) == ("spec.ipv6Suport", "unknown field")


# Shaped as Calico's documentation and its operator's defaults write them.
CALICO_EXAMPLES = """\
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: default
spec:
  bpfConnectTimeLoadBalancing: TCP
  bpfHostNetworkedNATWithoutCTLB: Enabled
  bpfLogLevel: ""
  floatingIPs: Disabled
  healthPort: 9099
  logSeverityScreen: Info
  reportingInterval: 0s
  vxlanPort: 4789
  vxlanVNI: 4096
---
apiVersion: projectcalico.org/v3
kind: IPPool
metadata:
  name: default-ipv4-ippool
spec:
  allowedUses: [Workload, Tunnel]
  assignmentMode: Automatic
  blockSize: 26
  cidr: 10.48.0.0/16
  ipipMode: Always
  natOutgoing: true
  nodeSelector: all()
  vxlanMode: Never
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: default
spec:
  logSeverityScreen: Info
  nodeToNodeMeshEnabled: true
  asNumber: 63400
  bindMode: NodeIP
  ignoredInterfaces: [ens4]
---
apiVersion: projectcalico.org/v3
kind: FelixConfiguration
metadata:
  name: node.node-1
spec:
  ipv6Support: false
  ipipMTU: 1400
  chainInsertMode: Append
---
apiVersion: projectcalico.org/v3
kind: BGPConfiguration
metadata:
  name: node.node-1
spec:
  asNumber: 64513
  listenPort: 178
---
apiVersion: projectcalico.org/v3
kind: BGPPeer
metadata:
  name: rack1-tor
spec:
  node: rack1-host1
  peerIP: 192.0.2.1
  asNumber: 63400
  keepOriginalNextHop: true
  maxRestartTime: 2m
  numAllowedLocalASNumbers: 1
  ttlSecurity: 1
  sourceAddress: UseNodeIP
  filters: [edge]
---
apiVersion: projectcalico.org/v3
kind: BGPFilter
metadata:
  name: edge
spec:
  exportV4:
    - {action: Accept, matchOperator: In, cidr: 10.48.0.0/16, prefixLength: {min: 26}}
    - {action: Reject, source: RemotePeers}
  importV4:
    - {action: Reject, matchOperator: NotIn, cidr: 203.0.113.0/24}
---
apiVersion: projectcalico.org/v3
kind: Node
metadata:
  name: rack1-host1
spec:
  bgp:
    asNumber: 64512
    ipv4Address: 198.51.100.7/24
    ipv4IPIPTunnelAddr: 10.48.0.1
  orchRefs: [{nodeName: rack1-host1, orchestrator: k8s}]
  addresses: [{address: 198.51.100.7, type: InternalIP}]
status: {podCIDRs: [10.48.0.0/24]}
"""


def test_calico_examples_apply_with_one_warning_line_per_field(etcd: EtcdServer) -> None:
    done = felidctl("apply", "-f", "-", url=etcd.url, stdin=CALICO_EXAMPLES)
    assert done.returncode == 0, done.stderr
    warnings = done.stderr.strip().splitlines()
    assert all(w.startswith("warning: <stdin>: document ") for w in warnings), warnings
    fields = [w.split(": ")[3].split(": ")[0] for w in warnings]
    assert fields == [
        "spec.bpfConnectTimeLoadBalancing",
        "spec.bpfHostNetworkedNATWithoutCTLB",
        "spec.bpfLogLevel",
        "spec.floatingIPs",
        "spec.reportingInterval",
        "spec.bindMode",
        "spec.ignoredInterfaces",
        "spec.ipv6Support",
        "status",
    ], warnings
    assert "document 1 (FelixConfiguration 'default')" in warnings[0]
    stored = yaml.safe_load(felidctl("get", "felixconfig", "default", "-o", "yaml", url=etcd.url).stdout)
    assert stored["spec"] == {
        "healthPort": 9099,
        "logSeverityScreen": "Info",
        "vxlanPort": 4789,
        "vxlanVNI": 4096,
    }
    assert felidctl("get", "bgpf", url=etcd.url).stdout.split() == [
        "NAME",
        "IMPORT",
        "EXPORT",
        "edge",
        "1",
        "2",
    ]
    peer = yaml.safe_load(felidctl("get", "bgppeer", "rack1-tor", "-o", "yaml", url=etcd.url).stdout)
    assert peer["spec"]["filters"] == ["edge"] and peer["spec"]["ttlSecurity"] == 1, peer
    refused = felidctl(
        "apply", "-f", "-", url=etcd.url, stdin=CALICO_EXAMPLES.replace("bindMode: NodeIP", "bindMode: None")
    )
    assert refused.returncode != 0
    assert (
        refused.stderr.strip()
        .splitlines()[-1]
        .startswith(
            "felidctl: <stdin>: document 3 (BGPConfiguration 'default'): "
            "spec.bindMode: 'None' is not supported yet"
        )
    ), refused.stderr

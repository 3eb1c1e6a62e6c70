"""Calico's fields that felid does not implement, each decided (never silently ignored).

Every field Calico documents for a kind is in one of three classes:

(a) implemented: a field of the kind's model;
(b) accepted with a warning: the field is here, and its value asks for exactly what felid
    already does (``ipv6Support: false``, ``reportingInterval: 0s``, a ``bpf*`` knob while eBPF
    is off); it is dropped before validation, since felid's behaviour is what it asks for;
(c) refused: the field is here and its value asks for something felid does not do, or it
    is not here at all (then the model refuses it as unknown).

``screen`` applies the table to one decoded document; docs/configuration.md lists it.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from datastore.errors import ValidationFailed, quoted
from datastore.models.base import parse_duration

Spec = Mapping[str, Any]
Accepts = Callable[[Any, Spec], bool]  # (the value, the whole spec): whether it asks for what felid does


@dataclass(frozen=True)
class Unimplemented:
    felid: str  # what felid does, in words (the warning and the error both say it)
    accepts: Accepts
    accepted: str  # the values accepted, in words (docs and errors)


def _same(value: Any, wanted: Any) -> bool:
    # True == 1 in Python; a document's boolean is not its number.
    return type(value) is type(wanted) and value == wanted


def equal(*values: Any) -> Accepts:
    return lambda value, _spec: any(_same(value, v) for v in values)


def _off(value: Any) -> bool:
    return value in (None, "", [], {}) or value is False or value == "Disabled"


def off(value: Any, _spec: Spec) -> bool:
    return _off(value)


def anything(_value: Any, _spec: Spec) -> bool:
    return True


def never(_value: Any, _spec: Spec) -> bool:
    return False


def zero_duration(value: Any, _spec: Spec) -> bool:
    try:
        return isinstance(value, str) and parse_duration(value) == 0
    except ValueError:
        return False


def while_off(flag: str, is_off: Callable[[Any], bool] = _off) -> Accepts:
    """A knob of a feature felid does not have: it asks for nothing while that feature is off."""
    return lambda _value, spec: is_off(spec.get(flag))


def _duration_equal(default: float, other: str | None = None) -> Accepts:
    """The same period as felid's timer: ``other`` (a field of the same spec) or ``default``."""

    def accepts(value: Any, spec: Spec) -> bool:
        reference = spec.get(other) if other else None
        try:
            wanted = parse_duration(reference) if isinstance(reference, str) else default
            return isinstance(value, str) and parse_duration(value) == wanted
        except ValueError:
            return False

    return accepts


def _mask_holds(bits: int) -> Accepts:
    return lambda value, _spec: (
        isinstance(value, int) and not isinstance(value, bool) and value & bits == bits
    )


def _ipv6(value: Any, _spec: Spec) -> bool:
    return _off(value)


OFF = "off (false, empty or Disabled)"
ANY = "any value"
IPV6 = Unimplemented("is IPv4 only: IPv6 is not supported yet", _ipv6, "unset or empty")


def _while(flag: str, feature: str) -> Unimplemented:
    return Unimplemented(f"has no {feature}", while_off(flag), f"any value while {flag} is off")


def shown(value: Any) -> str:
    """A value as the document spells it (false, not False)."""
    return json.dumps(value) if value is None or isinstance(value, bool) else quoted(value)


def _eq(felid: str, *values: Any) -> Unimplemented:
    return Unimplemented(felid, equal(*values), " or ".join(shown(v) for v in values))


def _bpf_fields() -> dict[str, Unimplemented]:
    names = [
        "bpfDisableUnprivileged",
        "bpfLogLevel",
        "bpfConntrackLogLevel",
        "bpfConntrackMode",
        "bpfConntrackTimeouts",
        "bpfLogFilters",
        "bpfCTLBLogFilter",
        "bpfDataIfacePattern",
        "bpfL3IfacePattern",
        "bpfConnectTimeLoadBalancingEnabled",
        "bpfConnectTimeLoadBalancing",
        "bpfHostNetworkedNATWithoutCTLB",
        "bpfExternalServiceMode",
        "bpfDSROptoutCIDRs",
        "bpfExtToServiceConnmark",
        "bpfKubeProxyIptablesCleanupEnabled",
        "bpfKubeProxyMinSyncPeriod",
        "bpfKubeProxyEndpointSlicesEnabled",
        "bpfPSNATPorts",
        "bpfMapSizeNATFrontend",
        "bpfMapSizeNATBackend",
        "bpfMapSizeNATAffinity",
        "bpfMapSizeRoute",
        "bpfMapSizeConntrack",
        "bpfMapSizePerCpuConntrack",
        "bpfMapSizeConntrackScaling",
        "bpfMapSizeConntrackCleanupQueue",
        "bpfMapSizeIPSets",
        "bpfMapSizeIfState",
        "bpfHostConntrackBypass",
        "bpfEnforceRPF",
        "bpfPolicyDebugEnabled",
        "bpfForceTrackPacketsFromIfaces",
        "bpfDisableGROForIfaces",
        "bpfExcludeCIDRsFromNAT",
        "bpfExportBufferSizeMB",
        "bpfRedirectToPeer",
        "bpfAttachType",
        "bpfProfiling",
        "cgroupV2Path",
    ]
    return {name: _while("bpfEnabled", "eBPF dataplane") for name in names}


def _wireguard_off(_value: Any, spec: Spec) -> bool:
    return _off(spec.get("wireguardEnabled")) and _off(spec.get("wireguardEnabledV6"))


def _wireguard_fields() -> dict[str, Unimplemented]:
    names = [
        "wireguardThreadingEnabled",
        "wireguardListeningPort",
        "wireguardListeningPortV6",
        "wireguardRoutingRulePriority",
        "wireguardInterfaceName",
        "wireguardInterfaceNameV6",
        "wireguardMTU",
        "wireguardMTUV6",
        "wireguardHostEncryptionEnabled",
        "wireguardKeepAlive",
        "prometheusWireGuardMetricsEnabled",
    ]
    rule = Unimplemented("has no WireGuard", _wireguard_off, "any value while wireguardEnabled is off")
    return {name: rule for name in names}


def _nftables_off(value: Any) -> bool:
    return value in (None, "", "Disabled")


def _nftables_fields() -> dict[str, Unimplemented]:
    names = "nftablesRefreshInterval nftablesFilterAllowAction nftablesMangleAllowAction "
    names += "nftablesFilterDenyAction nftablesMarkMask"
    rule = Unimplemented(
        "programs iptables (iptablesBackend), not nftables directly",
        while_off("nftablesMode", _nftables_off),
        "any value while nftablesMode is Disabled",
    )
    return {name: rule for name in names.split()}


_NO_LOG_FILE = equal("", "none", "None")
_GO = Unimplemented("is Python, not Go: there is no Go runtime to tune", anything, ANY)

FELIX_CONFIGURATION: dict[str, Unimplemented] = {
    "useInternalDataplaneDriver": _eq("programs the kernel itself", True),
    "dataplaneDriver": _eq("programs the kernel itself", ""),
    "dataplaneWatchdogTimeout": Unimplemented(
        "has no hang watchdog: a failed task ends felix, for its supervisor to restart", never, "nothing"
    ),
    "ipv6Support": _eq("is IPv4 only: IPv6 is not supported yet", False),
    "interfaceRefreshInterval": Unimplemented(
        "follows interface changes by netlink events and rereads on routeRefreshInterval",
        _duration_equal(90.0, "routeRefreshInterval"),
        "the routeRefreshInterval (90s when unset)",
    ),
    "iptablesRefreshInterval": Unimplemented(
        "reads iptables back on routeRefreshInterval, one timer for the whole kernel",
        _duration_equal(90.0, "routeRefreshInterval"),
        "the routeRefreshInterval (90s when unset)",
    ),
    "ipsetsRefreshInterval": Unimplemented(
        "reads ipsets back on routeRefreshInterval, one timer for the whole kernel",
        _duration_equal(90.0, "routeRefreshInterval"),
        "the routeRefreshInterval (90s when unset)",
    ),
    "iptablesPostWriteCheckInterval": Unimplemented(
        "rereads iptables only on its refresh timer or after a failed write", never, "nothing"
    ),
    "iptablesLockFilePath": _eq("leaves locking to iptables itself (/run/xtables.lock)", "/run/xtables.lock"),
    "iptablesLockTimeout": Unimplemented("leaves locking to iptables itself", zero_duration, "0s"),
    "iptablesLockProbeInterval": Unimplemented(
        "leaves locking to iptables itself",
        while_off("iptablesLockTimeout", lambda v: v in (None, "0s", "0")),
        "any value while iptablesLockTimeout is 0s",
    ),
    "featureDetectOverride": _eq("detects what it uses itself", ""),
    "featureGates": _eq("has no feature gates", ""),
    "maxIpsetSize": Unimplemented("sizes each ipset for its members", never, "nothing"),
    "xdpRefreshInterval": _while("xdpEnabled", "XDP"),
    "netlinkTimeout": Unimplemented("uses pyroute2's netlink timeouts", never, "nothing"),
    "metadataAddr": _eq("has no OpenStack metadata access", "", "None"),
    "metadataPort": Unimplemented(
        "has no OpenStack metadata access",
        while_off("metadataAddr", lambda v: v in (None, "", "None")),
        "any value while metadataAddr is None",
    ),
    "openstackRegion": _eq("is not OpenStack's", ""),
    "interfaceExclude": Unimplemented("excludes no host interface from host endpoint '*'", off, OFF),
    "iptablesFilterAllowAction": _eq("accepts allowed packets", "Accept"),
    "iptablesMangleAllowAction": _eq("accepts allowed packets", "Accept"),
    "iptablesFilterDenyAction": _eq("drops denied packets", "Drop"),
    "logPrefix": _eq("logs packets with the prefix 'felid-packet: '", "felid-packet: "),
    "logFilePath": Unimplemented("logs to stderr, for its supervisor to keep", _NO_LOG_FILE, "empty or none"),
    "logSeverityFile": Unimplemented(
        "logs to stderr only",
        while_off("logFilePath", lambda v: v in (None, "", "none", "None")),
        "any value while logFilePath is none",
    ),
    "logSeveritySys": Unimplemented("does not log to syslog", _NO_LOG_FILE, "empty or none"),
    "logDebugFilenameRegex": _eq("has no per-file debug logging", ""),
    "vxlanMTUV6": IPV6,
    "allowVXLANPacketsFromWorkloads": _eq("does not drop VXLAN packets from workloads", True),
    "allowIPIPPacketsFromWorkloads": _eq("does not drop IPIP packets from workloads", True),
    "reportingInterval": Unimplemented("writes no status reports to the datastore", zero_duration, "0s"),
    "reportingTTL": Unimplemented(
        "writes no status reports to the datastore",
        lambda _v, spec: (
            spec.get("reportingInterval") is None or zero_duration(spec["reportingInterval"], spec)
        ),
        "any value while reportingInterval is 0s",
    ),
    "endpointReportingEnabled": _eq("reports no endpoint status", False),
    "endpointReportingDelay": _while("endpointReportingEnabled", "endpoint status reports"),
    "endpointStatusPathPrefix": _eq("writes no endpoint status files", ""),
    "iptablesMarkMask": Unimplemented(
        "uses the mark bits 0x30000",
        _mask_holds(0x30000),
        "a mask including 0x30000 (Calico's 0xffff0000 does)",
    ),
    "disableConntrackInvalidCheck": _eq("drops conntrack-INVALID packets", False),
    "healthTimeoutOverrides": _eq("has fixed health timeouts", []),
    "prometheusGoMetricsEnabled": Unimplemented("is Python, not Go: there are no Go metrics", anything, ANY),
    "prometheusProcessMetricsEnabled": _eq("exports felix's own metrics only", False),
    "kubeNodePortRanges": Unimplemented("knows nothing of kube-proxy's node ports", never, "nothing"),
    "policySyncPathPrefix": _eq("has no policy sync API", ""),
    "usageReportingEnabled": _eq("reports no usage anywhere", False),
    "usageReportingInitialDelay": _while("usageReportingEnabled", "usage reporting"),
    "usageReportingInterval": _while("usageReportingEnabled", "usage reporting"),
    "natPortRange": Unimplemented("masquerades with the kernel's port choice", off, "unset"),
    "natOutgoingAddress": _eq("masquerades to the outgoing interface's address", ""),
    "natOutgoingExclusions": _eq("leaves traffic to IP pools un-NATed, and only that", "IPPoolsOnly"),
    "deviceRouteSourceAddress": _eq("sets no source address on workload routes", ""),
    "deviceRouteSourceAddressIPv6": IPV6,
    "deviceRouteProtocol": _eq("marks its workload routes with protocol 80", 80),
    "removeExternalRoutes": Unimplemented("removes only routes of its own protocol", never, "nothing"),
    "programClusterRoutes": _eq("leaves routes to other nodes' blocks to felid-bgp (as to BIRD)", "Disabled"),
    "ipForwarding": _eq("turns IPv4 forwarding on", "Enabled"),
    "externalNodesList": _eq("has no external nodes", []),
    "debugMemoryProfilePath": _eq("has no memory profiling", ""),
    "debugDisableLogDropping": Unimplemented("never drops log lines", anything, ANY),
    "debugSimulateCalcGraphHangAfter": Unimplemented("simulates no hang", zero_duration, "0s"),
    "debugSimulateDataplaneHangAfter": Unimplemented("simulates no hang", zero_duration, "0s"),
    "debugSimulateDataplaneApplyDelay": Unimplemented("simulates no delay", zero_duration, "0s"),
    "debugHost": _while("debugPort", "debug server"),
    "debugPort": Unimplemented("has no debug server", off, "unset"),
    "iptablesNATOutgoingInterfaceFilter": _eq("masquerades on every interface", ""),
    "sidecarAccelerationEnabled": _eq("has no sidecar acceleration", False),
    "xdpEnabled": Unimplemented(
        "enforces untracked policy in iptables' raw table, as Calico does where XDP is not available",
        anything,
        ANY,
    ),
    "genericXDPEnabled": _eq("has no XDP", False),
    "nftablesMode": _eq("programs iptables (iptablesBackend), not nftables directly", "Disabled"),
    "bpfEnabled": _eq("has no eBPF dataplane", False),
    "flowLogsPolicyEvaluationMode": _while("flowLogsGoldmaneServer", "flow logs"),
    "flowLogsFlushInterval": _while("flowLogsGoldmaneServer", "flow logs"),
    "flowLogsCollectorDebugTrace": _while("flowLogsGoldmaneServer", "flow logs"),
    "flowLogsGoldmaneServer": _eq("has no flow logs", ""),
    "flowLogsLocalReporter": _eq("has no flow logs", "", "Disabled"),
    "routeSource": _eq("routes workloads by their IPAM blocks", "CalicoIPAM"),
    "routeTableRanges": Unimplemented("uses only the main routing table", anything, ANY),
    "routeTableRange": Unimplemented("uses only the main routing table", anything, ANY),
    "routeSyncDisabled": _eq("programs routes", False),
    "wireguardEnabled": _eq("has no WireGuard", False),
    "wireguardEnabledV6": _eq("has no WireGuard", False),
    "awsSrcDstCheck": _eq("leaves AWS source/destination checks alone", "DoNothing"),
    "serviceLoopPrevention": _eq("has no service loop prevention", "Disabled"),
    "workloadSourceSpoofing": _eq(
        "drops what a workload sends from an address not its own (its endpoint chain checks)", "Disabled"
    ),
    "floatingIPs": _eq("has no floating IPs", "Disabled"),
    "windowsManageFirewallRules": Unimplemented("runs on Linux only", anything, ANY),
    "goGCThreshold": _GO,
    "goMemoryLimitMB": _GO,
    "goMaxProcs": _GO,
    "requireMTUFile": _eq("detects the MTU itself", False),
    **_bpf_fields(),
    **_wireguard_fields(),
    **_nftables_fields(),
}

IP_POOL: dict[str, Unimplemented] = {
    "namespaceSelector": _eq("lets workloads of every namespace use every pool", "", "all()"),
    "nat-outgoing": _eq("reads natOutgoing (Calico v1's spelling must be false)", False),
    "ipip": Unimplemented("reads ipipMode (Calico v1's ipip block must be absent)", never, "nothing"),
}

BGP_CONFIGURATION: dict[str, Unimplemented] = {
    "serviceLoadBalancerAggregation": _eq("announces each service CIDR as given", "Enabled"),
    "bindMode": _eq("listens for BGP on the node's address only", "NodeIP"),
    "ignoredInterfaces": Unimplemented(
        "learns no routes from interfaces: felid-bgp announces from IPAM", anything, ANY
    ),
    "localWorkloadPeeringIPV4": _eq("has no peering with local workloads", ""),
    "localWorkloadPeeringIPV6": IPV6,
}

BGP_PEER: dict[str, Unimplemented] = {
    "reachableBy": _eq("reaches peers by the node's routes", ""),
    "localWorkloadSelector": _eq("has no peering with local workloads", ""),
    "reversePeering": _eq("peers back from the nodes a peerSelector picks", "Auto"),
}

NODE: dict[str, Unimplemented] = {
    "wireguard": Unimplemented("has no WireGuard", off, "empty"),
}

UNIMPLEMENTED: Mapping[str, Mapping[str, Unimplemented]] = {
    "FelixConfiguration": FELIX_CONFIGURATION,
    "IPPool": IP_POOL,
    "BGPConfiguration": BGP_CONFIGURATION,
    "BGPPeer": BGP_PEER,
    "Node": NODE,
    "BGPFilter": {},  # every IPv4 field implemented (``interface`` refused by the model)
}

# Written by the system, never applied: Calico's output carries it, so a saved copy does too.
_STATUS_KINDS = frozenset({"Node"})


def screen(data: Any) -> tuple[Any, list[str]]:
    """``data`` without the class (b) fields its spec holds, and one warning per field dropped;
    ValidationFailed naming the first field whose value felid cannot honour."""
    if not isinstance(data, dict) or not isinstance(data.get("kind"), str):
        return data, []
    kind = data["kind"]
    warnings = []
    out = dict(data)
    if kind in _STATUS_KINDS and "status" in out:
        del out["status"]
        warnings.append("status: ignored: it is reported by the node itself, never applied")
    table = UNIMPLEMENTED.get(kind)
    spec = out.get("spec")
    if table is None or not isinstance(spec, dict):
        return out, warnings
    kept = {}
    for name, value in spec.items():
        rule = table.get(name)
        if rule is None:
            kept[name] = value
        elif rule.accepts(value, spec):
            warnings.append(f"spec.{name}: {shown(value)} accepted, not stored: felid {rule.felid}")
        else:
            raise ValidationFailed(
                f"spec.{name}",
                f"{shown(value)} is not supported yet: felid {rule.felid} (accepted: {rule.accepted})",
            )
    out["spec"] = kept
    return out, warnings

"""Kubernetes ``networking.k8s.io/v1`` NetworkPolicy, converted as Calico converts it.

A Kubernetes policy becomes the Calico NetworkPolicy ``knp.default.<name>`` in its namespace,
order 1000 (after the operator's ordered Calico policies), selecting
``projectcalico.org/orchestrator == 'k8s'`` pods its ``podSelector`` matches.  Each ingress
(egress) rule becomes one Allow rule per peer and protocol: ``podSelector`` a selector within the
policy's namespace, ``namespaceSelector`` the namespaces whose labels match (their ``kns.``
Profile's ``labelsToApply``), ``ipBlock`` nets with ``except`` as notNets; ports default to TCP,
``endPort`` makes a range.  ``policyTypes`` defaults as Kubernetes': Ingress, plus Egress when
there are egress rules.  No rules in a direction the policy has: everything in it is denied.
"""

from __future__ import annotations

from typing import Any

from datastore.errors import ValidationFailed, quoted

API_VERSION = "networking.k8s.io/v1"
PREFIX = "knp.default."
ORDER = 1000.0
_ORCHESTRATED = "projectcalico.org/orchestrator == 'k8s'"


def _quote(value: Any, where: str) -> str:
    text = str(value)
    if "'" in text:
        raise ValidationFailed(where, f"{quoted(text)}: a label value cannot hold a quote")
    return f"'{text}'"


def label_selector(selector: Any, where: str) -> str | None:
    """A Kubernetes LabelSelector as a Calico selector; None for the empty one (everything)."""
    if selector is None:
        return None
    if not isinstance(selector, dict):
        raise ValidationFailed(where, "expected a label selector (matchLabels, matchExpressions)")
    unknown = set(selector) - {"matchLabels", "matchExpressions"}
    if unknown:
        raise ValidationFailed(f"{where}.{sorted(unknown)[0]}", "unknown field")
    terms = [
        f"{k} == {_quote(v, f'{where}.matchLabels.{k}')}"
        for k, v in (selector.get("matchLabels") or {}).items()
    ]
    for i, expression in enumerate(selector.get("matchExpressions") or []):
        at = f"{where}.matchExpressions[{i}]"
        key, operator, values = (
            expression.get("key"),
            expression.get("operator"),
            expression.get("values") or [],
        )
        if not isinstance(key, str) or not key:
            raise ValidationFailed(f"{at}.key", "required")
        listed = ", ".join(_quote(v, f"{at}.values") for v in values)
        if operator in ("In", "NotIn") and not values:
            raise ValidationFailed(f"{at}.values", f"{operator} needs at least one value")
        if operator == "In":
            terms.append(f"{key} in {{{listed}}}")
        elif operator == "NotIn":
            terms.append(f"{key} not in {{{listed}}}")
        elif operator == "Exists":
            terms.append(f"has({key})")
        elif operator == "DoesNotExist":
            terms.append(f"! has({key})")
        else:
            raise ValidationFailed(
                f"{at}.operator", f"{quoted(operator)}: one of In, NotIn, Exists, DoesNotExist"
            )
    return " && ".join(terms) if terms else None


def _peer(peer: Any, where: str) -> dict[str, Any]:
    """One ``from`` / ``to`` entry as a Calico EntityRule."""
    if not isinstance(peer, dict):
        raise ValidationFailed(where, "expected podSelector, namespaceSelector or ipBlock")
    block = peer.get("ipBlock")
    if block is not None:
        if set(peer) != {"ipBlock"}:
            raise ValidationFailed(where, "ipBlock cannot be combined with a selector")
        entity: dict[str, Any] = {"nets": [block.get("cidr")]}
        if block.get("except"):
            entity["notNets"] = list(block["except"])
        return entity
    entity = {}
    pods = label_selector(peer.get("podSelector"), f"{where}.podSelector")
    if "namespaceSelector" in peer:
        namespaces = label_selector(peer.get("namespaceSelector"), f"{where}.namespaceSelector")
        entity["namespaceSelector"] = namespaces or "all()"
    if pods is not None or "podSelector" in peer:
        entity["selector"] = " && ".join(filter(None, [_ORCHESTRATED, pods]))
    if not entity:
        raise ValidationFailed(where, "expected podSelector, namespaceSelector or ipBlock")
    return entity


def _ports(ports: Any, where: str) -> dict[str, list[int | str]]:
    """Ports by protocol (TCP unless given); a protocol with no port given means every port."""
    out: dict[str, list[int | str]] = {}
    for i, port in enumerate(ports or []):
        protocol = str(port.get("protocol", "TCP"))
        number, end = port.get("port"), port.get("endPort")
        listed = out.setdefault(protocol, [])
        if number is None:
            continue
        if end is not None:
            if not isinstance(number, int):
                raise ValidationFailed(f"{where}[{i}].endPort", "needs a numbered port")
            listed.append(f"{number}:{end}")
        else:
            listed.append(number)
    return out


def _rules(rules: Any, side: str, where: str) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    peer_side, port_side = ("source", "destination") if side == "from" else ("destination", "destination")
    for i, rule in enumerate(rules or []):
        at = f"{where}[{i}]"
        peers = [_peer(p, f"{at}.{side}[{j}]") for j, p in enumerate(rule.get(side) or [])] or [{}]
        by_protocol: dict[str | None, list[int | str]] = dict(
            _ports(rule.get("ports"), f"{at}.ports").items()
        )
        if not by_protocol:
            by_protocol[None] = []  # no ports: every protocol, every port
        for peer in peers:
            for protocol, ports in by_protocol.items():
                made: dict[str, Any] = {"action": "Allow"}
                if protocol is not None:
                    made["protocol"] = protocol
                sides: dict[str, dict[str, Any]] = {peer_side: dict(peer)}
                if ports:
                    sides.setdefault(port_side, {})["ports"] = ports
                made |= {k: v for k, v in sides.items() if v}
                out.append(made)
    return out


def network_policy(data: dict[str, Any]) -> dict[str, Any]:
    """The Calico NetworkPolicy document a Kubernetes one stands for (validated as any other)."""
    metadata, spec = data.get("metadata") or {}, data.get("spec")
    if not isinstance(spec, dict):
        raise ValidationFailed("spec", "required")
    unknown = set(spec) - {"podSelector", "policyTypes", "ingress", "egress"}
    if unknown:
        raise ValidationFailed(f"spec.{sorted(unknown)[0]}", "unknown field")
    if "podSelector" not in spec:
        raise ValidationFailed("spec.podSelector", "required (use {} for every pod)")
    types = spec.get("policyTypes") or ["Ingress", *(["Egress"] if spec.get("egress") else [])]
    pods = label_selector(spec.get("podSelector"), "spec.podSelector")
    name = metadata.get("name")
    return {
        "apiVersion": "projectcalico.org/v3",
        "kind": "NetworkPolicy",
        "metadata": {
            "name": f"{PREFIX}{name}" if isinstance(name, str) else name,
            "namespace": metadata.get("namespace") or "default",
        },
        "spec": {
            "order": ORDER,
            "selector": " && ".join(filter(None, [_ORCHESTRATED, pods])),
            "types": types,
            "ingress": _rules(spec.get("ingress"), "from", "spec.ingress") if "Ingress" in types else [],
            "egress": _rules(spec.get("egress"), "to", "spec.egress") if "Egress" in types else [],
        },
    }

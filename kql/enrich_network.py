"""Defender's `AssignedIPAddresses()` and `invoke DeviceFromIP()`, over this Quarry's DeviceNetworkInfo.

Defender answers both from its device inventory; Quarry answers from what its own devices reported
in DeviceNetworkInfo, whose `IPAddresses` column holds each adapter's addresses as a JSON array of
`{"IPAddress", "SubnetPrefix", "AddressType"}`. A report is a snapshot of one adapter: an address
is assigned to a device from the report that lists it until that adapter's next report.

- `AssignedIPAddresses(x[, y])` (Defender docs, "AssignedIPAddresses() function"): the addresses of
  device `x` (a DeviceId or DeviceName) in each adapter's latest report at or before `y` (default:
  now). Documented columns Timestamp, IPAddress, IPType, NetworkAdapterType, ConnectedNetworks, then
  DeviceId and DeviceName (the docs' example projects DeviceName after the call). NetworkAdapterType
  and ConnectedNetworks keep DeviceNetworkInfo's string type: the docs' table says int, but the
  values are an enumeration name and a JSON array.
- `invoke DeviceFromIP([ip[, time]])` ("DeviceFromIP() function"): for each input row, the devices
  whose address was `ip` (default: the IP column) at `time` (default: now; a column such as
  Timestamp gives each row its own time). The input columns are kept and DeviceId is added, one row
  per device; a row no device had the address for keeps DeviceId "" (rows are never dropped).

Both are written in KQL below and compiled like a user's function, so every engine runs them the way
it runs the operators they use. The compiler adds a warning that the answer is Quarry's own view.
"""

from __future__ import annotations

from functools import cache

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Binding, Env, Scope
from kql.diagnostics import name_hints
from kql.lower import capabilities
from kql.parser import parse
from kql.registry import Binder, invoke_plugin, table_function
from kql.relation import Rel
from kql.typed import STRINGY, V, to_type

SOURCE_TABLE = "DeviceNetworkInfo"

# Each adapter's reports in time order, one row per address, valid from the report to the next one.
_ASSIGNMENTS = """
DeviceNetworkInfo
| project __ts = Timestamp, DeviceId, DeviceName, NetworkAdapterName, NetworkAdapterType, ConnectedNetworks,
          IPAddresses
| sort by DeviceId asc, NetworkAdapterName asc, __ts asc
| extend __until = iff(next(DeviceId) == DeviceId and next(NetworkAdapterName) == NetworkAdapterName,
                       next(__ts), datetime(null))
| mv-expand __ip = parse_json(IPAddresses)
| extend __addr = tostring(__ip.IPAddress), __type = tostring(__ip.AddressType)
| where isnotempty(__addr)
"""

_ASSIGNED = """
let __assignments = {assignments};
__assignments
| where __ts <= __aip_at and (isnull(__until) or __aip_at < __until)
| where DeviceId == __aip_device or DeviceName =~ __aip_device
| project Timestamp = __ts, IPAddress = __addr, IPType = __type, NetworkAdapterType, ConnectedNetworks,
          DeviceId, DeviceName
"""

_FROM_IP = """
let __assignments = {assignments};
let __rows = __dfi_in | serialize __rid = row_number();
let __hits = __rows
    | join kind=inner (__assignments | project __addr, __ts, __until, __dev = DeviceId) on $left.__dfi_ip == $right.__addr
    | where __ts <= __dfi_at and (isnull(__until) or __dfi_at < __until)
    | distinct __hid = __rid, __dev;
__rows
| join kind=leftouter __hits on $left.__rid == $right.__hid
| project {columns}, DeviceId = tostring(__dev)
"""

WARNING = ("{name}() is computed from this Quarry's own DeviceNetworkInfo reports, not Microsoft's device "
           "inventory: an address counts as assigned from the report that lists it until that adapter's "
           "next report")


@cache
def _statements(template: str, columns: str = "") -> tuple[n.Node, ...]:
    text = template.format(assignments=_ASSIGNMENTS.strip(), columns=columns)
    return parse(text).statements


def _run(bd: Binder, statements: tuple[n.Node, ...], env: Env) -> Rel:
    result: Rel | None = None
    for st in statements:
        if isinstance(st, n.Let):
            bd.let(st, env)
        else:
            result = bd.tabular(st, env)
    assert result is not None
    return result


def _need_table(bd: Binder, call: n.Call) -> None:
    # the KQL below expands JSON arrays: say so at the call if the engine cannot
    capabilities.check(bd.ctx, "operator", "mv-expand", call.name_span)
    if bd.ctx.catalog.table(SOURCE_TABLE) is None:
        raise bd.ctx.fail("unsupported", f"{call.name}() needs the {SOURCE_TABLE} table, which this catalog lacks",
                          call.name_span)


def _time_arg(bd: Binder, node: n.Node | None, scope: Scope, name: str) -> V:
    if node is None:
        return bd.scalar(n.Call(n.Span(0, 0), "now", n.Span(0, 0), ()), scope)
    v = bd.scalar(node, scope)
    if v.type not in ("datetime", "unknown"):
        raise bd.ctx.fail("type_mismatch", f"{name}(): the time argument is a {v.type}, a datetime is needed", node.span)
    return v


@table_function("AssignedIPAddresses")
def assigned_ip_addresses(bd: Binder, call: n.Call, env: Env) -> Rel:
    ctx = bd.ctx
    if not 1 <= len(call.args) <= 2:
        raise ctx.fail("wrong_arguments", f"AssignedIPAddresses() takes 1 or 2 arguments (device, time), got "
                       f"{len(call.args)}", call.span)
    _need_table(bd, call)
    scope = Scope(env)
    device = bd.scalar(call.args[0], scope)
    if device.type not in STRINGY and device.type != "unknown":
        raise ctx.fail("type_mismatch", f"AssignedIPAddresses(): the device is a {device.type}, a DeviceId or "
                       "DeviceName string is needed", call.args[0].span)
    at = _time_arg(bd, call.args[1] if len(call.args) > 1 else None, scope, call.name)
    ctx.warn("enrichment", WARNING.format(name=call.name), call.span)
    inner = Env()
    inner.names["__aip_device"] = Binding("scalar", V(to_type(device, "string"), "string"))
    inner.names["__aip_at"] = Binding("scalar", at)
    return _run(bd, _statements(_ASSIGNED), inner)


@invoke_plugin("DeviceFromIP")
def device_from_ip(bd: Binder, rel: Rel, call: n.Call, env: Env) -> Rel:
    ctx = bd.ctx
    if len(call.args) > 2:
        raise ctx.fail("wrong_arguments", f"DeviceFromIP() takes 0 to 2 arguments (ip, time), got {len(call.args)}",
                       call.span)
    _need_table(bd, call)
    if any(c.startswith("__") for c in rel.cols):
        raise ctx.fail("wrong_arguments", "DeviceFromIP(): input column names starting with __ are reserved",
                       call.span)
    rel = bd.wrap(rel)  # plain columns over one subquery, so the expressions below select from it
    scope = Scope(env, rel)
    if call.args:
        ip = bd.scalar(call.args[0], scope)
    elif "IP" in rel.cols:
        ip = V(rel.exprs["IP"], rel.cols["IP"])
    else:
        raise ctx.fail("unknown_column", "DeviceFromIP(): the input has no IP column; name the address, e.g. "
                       "invoke DeviceFromIP(LocalIP)", call.span, name_hints("IP", list(rel.cols), "columns"))
    if ip.type not in STRINGY and ip.type != "unknown":
        raise ctx.fail("type_mismatch", f"DeviceFromIP(): the address is a {ip.type}, a string is needed",
                       (call.args[0] if call.args else call).span)
    at = _time_arg(bd, call.args[1] if len(call.args) > 1 else None, scope, call.name)
    ctx.warn("enrichment", WARNING.format(name=call.name), call.span)
    # the input, with the address and the time as columns, so the KQL below can join on them
    exprs = [sb.alias(rel.exprs[c], c) for c in rel.cols]
    exprs += [sb.alias(to_type(ip, "string"), "__dfi_ip"), sb.alias(at.sql, "__dfi_at")]
    sel = exp.Select(expressions=exprs).from_(rel.src)
    cols = {**rel.cols, "__dfi_ip": "string", "__dfi_at": "datetime"}
    if "DeviceId" in rel.cols:
        raise ctx.fail("wrong_arguments", "DeviceFromIP(): the input already has a DeviceId column; rename it "
                       "first (project-rename)", call.span)
    inp = bd.wrap_select(sel, cols)
    inner = Env()
    inner.names["__dfi_in"] = Binding("rel", inp)
    # the input columns, then DeviceId: one row per input row and device
    columns = ", ".join("['" + c.replace("\\", "\\\\").replace("'", "\\'") + "']" for c in rel.cols)
    return _run(bd, _statements(_FROM_IP, columns), inner)

"""`invoke FileProfile()`: Defender's file enrichment, computed from this Quarry's own tables.

Defender fills FileProfile() from Microsoft's global file reputation service. Quarry has no such
service, so it answers from what its own devices reported (the Defender docs page
"FileProfile() function" lists the columns and types):

- `SHA1`, `SHA256`, `MD5`, `FileSize`: any non-empty value reported with the hash;
- `GlobalPrevalence`, `GlobalFirstSeen`, `GlobalLastSeen`: distinct devices that saw the file and
  the first and last time, over DeviceProcessEvents, DeviceFileEvents and DeviceImageLoadEvents
  (the file itself and, as initiating process, its image) -- organisation-wide, not global;
- `Signer`, `Issuer`, `SignerHash`, `IsCertificateValid` (IsTrusted), `IsRootSignerMicrosoft`,
  `SignatureState`: the latest DeviceFileCertificateInfo row of the SHA1;
- `IsExecutable`: true when the file ran as a process or was loaded as an image (both are
  Portable Executables), else null; `Publisher`, `SoftwareName`: the process version info;
- `ThreatName`: reputation only, always "" (Kusto strings are never null);
- `ProfileAvailability`: Available / Missing (no local record of the hash) / "" (empty id).

The compiler adds a warning saying so. Input columns keep their names and values; profile
columns the input already has are not added again.
"""

from __future__ import annotations

from sqlglot import exp

from kql import nodes as n
from kql import sqlbuild as sb
from kql.context import Env
from kql.diagnostics import name_hints
from kql.registry import Binder, invoke_plugin
from kql.relation import Rel
from kql.typed import STRINGY

# name, KQL type (the docs' int columns are long here: file sizes and counts exceed 2^31)
PROFILE_COLUMNS: list[tuple[str, str]] = [
    ("SHA1", "string"), ("SHA256", "string"), ("MD5", "string"), ("FileSize", "long"),
    ("GlobalPrevalence", "long"), ("GlobalFirstSeen", "datetime"), ("GlobalLastSeen", "datetime"),
    ("Signer", "string"), ("Issuer", "string"), ("SignerHash", "string"),
    ("IsCertificateValid", "bool"), ("IsRootSignerMicrosoft", "bool"), ("SignatureState", "string"),
    ("IsExecutable", "bool"), ("ThreatName", "string"), ("Publisher", "string"),
    ("SoftwareName", "string"), ("ProfileAvailability", "string"),
]

# (table, column prefix, is a Portable Executable, version-info prefix): where a file is "seen"
SIGHTINGS: list[tuple[str, str, bool | None, str | None]] = [
    ("DeviceProcessEvents", "", True, "Process"),
    ("DeviceProcessEvents", "InitiatingProcess", True, "InitiatingProcess"),
    ("DeviceFileEvents", "", None, None),
    ("DeviceFileEvents", "InitiatingProcess", True, "InitiatingProcess"),
    ("DeviceImageLoadEvents", "", True, None),
    ("DeviceImageLoadEvents", "InitiatingProcess", True, "InitiatingProcess"),
]
CERT_TABLE = "DeviceFileCertificateInfo"

WARNING = ("FileProfile() is computed from this Quarry's own data: GlobalPrevalence, GlobalFirstSeen "
           "and GlobalLastSeen are organisation-wide (devices reporting here), not Microsoft's global "
           "view; reputation fields (ThreatName) are empty and certificate fields come from "
           "DeviceFileCertificateInfo")


def _c(name: str, table: str | None = None) -> exp.Column:
    return sb.col(name, table)


def _nonempty_max(e: exp.Expr) -> exp.Expr:
    return exp.Max(this=exp.Nullif(this=e, expression=sb.s("")))


def _sightings(compiler: Binder, key_kind: str, keys: exp.Select) -> exp.Select | None:
    """One row per sighting of a file whose `key_kind` hash (SHA1 or SHA256) is in `keys`."""
    catalog = compiler.ctx.catalog
    parts: list[exp.Select] = []
    for table_name, prefix, pe, version in SIGHTINGS:
        table = catalog.table(table_name)
        if table is None:
            continue
        names = set(table.column_names)
        key_col = prefix + key_kind
        if key_col not in names or "DeviceId" not in names or "Timestamp" not in names:
            continue
        compiler.ctx.tables.add(table_name)

        def pick(column: str, kql_type: str, names: set[str] = names) -> exp.Expr:
            return _c(column) if column in names else sb.null(kql_type)

        size = "FileSize" if not prefix else prefix + "FileSize"
        cols = [
            sb.alias(_c(key_col), "k"),
            sb.alias(pick(prefix + "SHA1", "string"), "sha1"),
            sb.alias(pick(prefix + "SHA256", "string"), "sha256"),
            sb.alias(pick(prefix + "MD5", "string"), "md5"),
            sb.alias(sb.cast(pick(size, "long"), "long"), "size"),
            sb.alias(_c("DeviceId"), "dev"),
            sb.alias(_c("Timestamp"), "ts"),
            sb.alias(sb.null("bool") if pe is None else exp.Boolean(this=pe), "pe"),
            sb.alias(pick(f"{version}VersionInfoCompanyName", "string") if version else sb.null("string"), "pub"),
            sb.alias(pick(f"{version}VersionInfoProductName", "string") if version else sb.null("string"), "sw"),
        ]
        where = exp.In(this=_c(key_col), query=exp.Subquery(this=keys.copy()))
        parts.append(exp.Select(expressions=cols).from_(exp.Table(this=sb.ident(table_name))).where(where))
    if not parts:
        return None
    union: exp.Expr = parts[0]
    for p in parts[1:]:
        union = exp.Union(this=union, expression=p, distinct=False)
    src = exp.Subquery(this=union, alias=exp.TableAlias(this=sb.ident("_s")))
    return exp.Select(expressions=[
        _c("k"),
        sb.alias(_nonempty_max(_c("sha1")), "sha1"),
        sb.alias(_nonempty_max(_c("sha256")), "sha256"),
        sb.alias(_nonempty_max(_c("md5")), "md5"),
        sb.alias(exp.Max(this=_c("size")), "size"),
        sb.alias(exp.Count(this=exp.Distinct(expressions=[_c("dev")])), "prevalence"),
        sb.alias(exp.Min(this=_c("ts")), "first_seen"),
        sb.alias(exp.Max(this=_c("ts")), "last_seen"),
        sb.alias(sb.fn("bool_or", _c("pe")), "pe"),
        sb.alias(_nonempty_max(_c("pub")), "pub"),
        sb.alias(_nonempty_max(_c("sw")), "sw"),
    ]).from_(src).group_by(_c("k"))


def _certificates(compiler: Binder, profile_cte: str) -> exp.Select | None:
    """The latest certificate row of each SHA1 the profile found."""
    table = compiler.ctx.catalog.table(CERT_TABLE)
    wanted = ("SHA1", "Timestamp", "IsSigned", "Signer", "Issuer", "SignerHash", "IsTrusted",
              "IsRootSignerMicrosoft")
    if table is None or not all(c in table.column_names for c in wanted):
        return None
    compiler.ctx.tables.add(CERT_TABLE)
    sha1s = exp.Select(expressions=[_c("sha1")]).from_(exp.Table(this=sb.ident(profile_cte)))

    def latest(column: str) -> exp.Expr:
        return sb.alias(sb.fn("arg_max", _c(column), _c("Timestamp")), column)

    return exp.Select(expressions=[
        _c("SHA1"),
        *[latest(c) for c in ("IsSigned", "Signer", "Issuer", "SignerHash", "IsTrusted", "IsRootSignerMicrosoft")],
    ]).from_(exp.Table(this=sb.ident(CERT_TABLE))).where(
        exp.In(this=_c("SHA1"), query=exp.Subquery(this=sha1s))
    ).group_by(_c("SHA1"))


@invoke_plugin("FileProfile")
def file_profile(compiler: Binder, rel: Rel, call: n.Call, env: Env) -> Rel:
    ctx = compiler.ctx
    if len(call.args) > 2:
        raise ctx.fail("wrong_arguments", f"FileProfile() takes 0 to 2 arguments, got {len(call.args)}", call.span)
    key = "SHA1"  # the docs: SHA1 when unspecified
    key_span = call.span
    if call.args:
        a = call.args[0]
        key_span = a.span
        if isinstance(a, n.Literal) and isinstance(a.value, str):
            key = a.value
        elif isinstance(a, n.Name):
            key = a.name
        else:
            raise ctx.fail("wrong_arguments", "FileProfile(): the first argument is the file id column, "
                           "e.g. SHA1 or \"SHA256\"", a.span)
    if len(call.args) == 2:
        limit = call.args[1]
        if not (isinstance(limit, n.Literal) and isinstance(limit.value, int) and not isinstance(limit.value, bool)
                and limit.value > 0):
            raise ctx.fail("wrong_arguments", "FileProfile(): the second argument is a positive number of records",
                           limit.span)
    if key not in rel.cols:
        raise ctx.fail("unknown_column", f"FileProfile(): unknown column {key!r}", key_span,
                       name_hints(key, list(rel.cols), "columns"))
    if rel.cols[key] not in STRINGY:
        raise ctx.fail("type_mismatch", f"FileProfile(): {key} is a {rel.cols[key]}, a hash column (string) is needed",
                       key_span)
    # The argument names the hash kind; a column such as NewSHA1 or InitiatingProcessSHA256 follows it.
    key_kind = "SHA256" if "256" in key else "SHA1"
    ctx.warn("enrichment", WARNING, call.span)

    inp = ctx.alias("_fp_in")
    ctx.ctes.append((inp, rel.select()))
    keys = exp.Select(expressions=[_c(key)]).from_(exp.Table(this=sb.ident(inp)))
    profile = _sightings(compiler, key_kind, keys)
    prof_name = ctx.alias("_fp_prof")
    if profile is None:  # a catalog without the event tables: every file is Missing
        profile = exp.Select(expressions=[sb.alias(sb.null("string"), c) for c in
                                          ("k", "sha1", "sha256", "md5")] +
                             [sb.alias(sb.null(t), c) for c, t in (("size", "long"), ("prevalence", "long"),
                                                                    ("first_seen", "datetime"), ("last_seen", "datetime"),
                                                                    ("pe", "bool"), ("pub", "string"), ("sw", "string"))]
                             ).where(exp.false())
    ctx.ctes.append((prof_name, profile))
    certs = _certificates(compiler, prof_name)

    i, p, c = "_i", "_p", "_c"
    empty_key = exp.EQ(this=sb.fn("coalesce", _c(key, i), sb.s("")), expression=sb.s(""))
    found = exp.Not(this=exp.Is(this=_c("k", p), expression=exp.Null()))

    def text(e: exp.Expr) -> exp.Expr:
        return sb.fn("coalesce", e, sb.s(""))

    def cert(column: str, kql_type: str) -> exp.Expr:
        if certs is None:
            return sb.s("") if kql_type == "string" else sb.null(kql_type)
        return text(_c(column, c)) if kql_type == "string" else _c(column, c)

    if certs is None:
        state: exp.Expr = sb.s("Unknown")
    else:
        state = exp.Case(ifs=[
            exp.If(this=exp.Is(this=_c("SHA1", c), expression=exp.Null()), true=sb.s("Unknown")),
            exp.If(this=exp.Not(this=sb.fn("coalesce", _c("IsSigned", c), exp.false())), true=sb.s("Unsigned")),
            exp.If(this=sb.fn("coalesce", _c("IsTrusted", c), exp.false()), true=sb.s("SignedValid")),
        ], default=sb.s("SignedInvalid"))
    computed: dict[str, exp.Expr] = {
        "SHA1": text(_c("sha1", p)),
        "SHA256": text(_c("sha256", p)),
        "MD5": text(_c("md5", p)),
        "FileSize": _c("size", p),
        "GlobalPrevalence": _c("prevalence", p),
        "GlobalFirstSeen": _c("first_seen", p),
        "GlobalLastSeen": _c("last_seen", p),
        "Signer": cert("Signer", "string"),
        "Issuer": cert("Issuer", "string"),
        "SignerHash": cert("SignerHash", "string"),
        "IsCertificateValid": cert("IsTrusted", "bool"),
        "IsRootSignerMicrosoft": cert("IsRootSignerMicrosoft", "bool"),
        "SignatureState": state,
        "IsExecutable": _c("pe", p),
        "ThreatName": sb.s(""),
        "Publisher": text(_c("pub", p)),
        "SoftwareName": text(_c("sw", p)),
        "ProfileAvailability": exp.Case(ifs=[exp.If(this=empty_key, true=sb.s("")),
                                             exp.If(this=found, true=sb.s("Available"))],
                                        default=sb.s("Missing")),
    }
    cols = dict(rel.cols)
    exprs: list[exp.Expr] = [sb.alias(_c(name, i), name) for name in rel.cols]
    for name, kql_type in PROFILE_COLUMNS:
        if name in cols:
            continue
        cols[name] = kql_type
        exprs.append(sb.alias(computed[name], name))
    sel = exp.Select(expressions=exprs).from_(
        exp.Table(this=sb.ident(inp), alias=exp.TableAlias(this=sb.ident(i)))
    ).join(
        exp.Table(this=sb.ident(prof_name), alias=exp.TableAlias(this=sb.ident(p))),
        on=exp.EQ(this=_c(key, i), expression=_c("k", p)), join_type="left",
    )
    if certs is not None:
        sel = sel.join(
            exp.Subquery(this=certs, alias=exp.TableAlias(this=sb.ident(c))),
            on=exp.EQ(this=_c("SHA1", c), expression=_c("sha1", p)), join_type="left",
        )
    return compiler.wrap_select(sel, cols)

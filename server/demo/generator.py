"""The realistic synthetic dataset: a fleet simulated day by day.

Each device boots before the window with its OS's system processes, then every day its user logs
on and works (applications, shells, downloads, documents) while background services run. Every
process event is made from ``Proc`` objects, so a child's InitiatingProcess* columns are exactly
its parent's process columns, and every file, network, registry, image-load and logon event names
the process that caused it. Two scenarios are planted for hunting: the USB leak from a Mac
(``scenario.py``) and a PowerShell download cradle launched from Word on a Windows laptop, which
raised an alert.
"""

from __future__ import annotations

import dataclasses
import random
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa

from schema.catalog import Catalog
from server.demo import software as sw
from server.demo import tvm
from server.demo.arrow import rows_to_table
from server.demo.fleet import SCENARIO_USER, build_fleet
from server.demo.model import NETBIOS, TENANT_SID, Account, Binary, Device, Proc, jitter, rand_guid
from server.demo.scenario import plant_usb_scenario

DEFAULT_EVENTS_PER_DEVICE_PER_DAY = 300
Row = dict[str, Any]


def _naive_utc(ts: datetime) -> datetime:
    if ts.tzinfo is not None:
        return ts.astimezone(UTC).replace(tzinfo=None)
    return ts


class Simulation:
    """Collects rows per table while devices act out their days."""

    def __init__(self, start: datetime, end: datetime, seed: int, events_per_day: int) -> None:
        self.start = start
        self.end = end
        self.seed = seed
        self.events_per_day = events_per_day
        self.rows: dict[str, list[Row]] = defaultdict(list)
        self._cert_seen: set[tuple[str, str, int]] = set()

    # -- emission -------------------------------------------------------------------------------
    def emit(self, table: str, dev: Device, ts: datetime, cols: Row) -> int:
        """Record one event row if it falls in the window; returns 1 (the attempt) for budgeting."""
        if self.start <= ts < self.end:
            row: Row = {"Timestamp": ts, "DeviceId": dev.device_id, "DeviceName": dev.name,
                        "ReportId": dev.new_report_id()}
            row.update(cols)
            self.rows[table].append(row)
        return 1

    def process_created(self, dev: Device, child: Proc) -> int:
        assert child.parent is not None
        cols = {"ActionType": "ProcessCreated", **child.process_columns(), **child.parent.initiating_columns()}
        n = self.emit("DeviceProcessEvents", dev, child.created, cols)
        if dev.os == "Windows":
            n += self.file_certificate(dev, child.binary, child.created)
            n += self.image_loads(dev, child)
        return n

    def image_loads(self, dev: Device, proc: Proc) -> int:
        rng = dev.rng
        # Defender samples image loads heavily; a couple per process keeps proportions realistic.
        dlls = rng.sample(sw.WIN_DLLS[:8], rng.randint(1, 2))
        if proc.binary.name == "powershell.exe":
            dlls += sw.WIN_DLLS[8:]  # amsi, the CLR and System.Management.Automation
        n = 0
        t = proc.created
        for dll in dlls:
            t += jitter(rng, 0.05)
            n += self.emit("DeviceImageLoadEvents", dev, t, {
                "ActionType": "ImageLoaded", **self.file_columns(dll), **proc.initiating_columns()})
        return n

    def file_certificate(self, dev: Device, b: Binary, ts: datetime) -> int:
        day = (ts - self.start).days
        key = (dev.device_id, b.sha1, day)
        if key in self._cert_seen or not (self.start <= ts < self.end):
            return 0
        self._cert_seen.add(key)
        ms = b.signer in ("OsVendor", "Microsoft")
        signer = "Microsoft Windows" if b.signer == "OsVendor" else (b.company or "Unknown")
        issuer = "Microsoft Windows Production PCA 2011" if ms else "DigiCert Trusted G4 Code Signing RSA4096 SHA384 2021 CA1"
        return self.emit("DeviceFileCertificateInfo", dev, ts + timedelta(seconds=2), {
            "SHA1": b.sha1, "IsSigned": True, "SignatureType": "Embedded" if not ms else "Catalog",
            "Signer": signer, "SignerHash": _hex(signer, 40), "Issuer": issuer, "IssuerHash": _hex(issuer, 40),
            "CertificateSerialNumber": _hex(signer + "serial", 38),
            "CrlDistributionPointUrls": None if ms else ["http://crl3.digicert.com/DigiCertTrustedG4CodeSigningRSA4096SHA3842021CA1.crl"],
            "CertificateCreationTime": datetime(2023, 10, 19, 19, 51, 52),
            "CertificateExpirationTime": datetime(2024, 10, 16, 19, 51, 52) if ms else datetime(2025, 11, 2, 23, 59, 59),
            "CertificateCountersignatureTime": ts - timedelta(days=40),
            "IsTrusted": True, "IsRootSignerMicrosoft": ms,
        })

    @staticmethod
    def file_columns(b: Binary) -> Row:
        return {"FileName": b.name, "FolderPath": b.path, "SHA1": b.sha1, "SHA256": b.sha256,
                "MD5": b.md5, "FileSize": b.size}

    def file_event(self, dev: Device, proc: Proc, ts: datetime, path: str, action: str = "FileCreated",
                   size: int | None = None, origin: tuple[str, str] | None = None,
                   extra: Row | None = None) -> int:
        name = path.replace("\\", "/").rsplit("/", 1)[-1]
        digest = Binary(path, str(size)).sha256
        cols: Row = {"ActionType": action, "FileName": name, "FolderPath": path,
                     "SHA1": Binary(path, str(size)).sha1, "SHA256": digest,
                     "MD5": Binary(path, str(size)).md5,
                     "FileSize": size if size is not None else dev.rng.randint(200, 4_000_000),
                     **proc.initiating_columns()}
        if origin:
            cols["FileOriginUrl"], cols["FileOriginIP"] = origin
            cols["FileOriginReferrerUrl"] = "https://www.google.com/"
        if dev.os == "Windows":
            cols["SensitivityLabel"] = None
            cols["IsAzureInfoProtectionApplied"] = False
        if extra:
            cols.update(extra)
        return self.emit("DeviceFileEvents", dev, ts, cols)

    def connection(self, dev: Device, proc: Proc, ts: datetime, target: tuple[str, str, int],
                   action: str = "ConnectionSuccess") -> int:
        url, ip, port = target
        return self.emit("DeviceNetworkEvents", dev, ts, {
            "ActionType": action, "RemoteIP": ip, "RemotePort": port, "RemoteUrl": url,
            "LocalIP": dev.ip, "LocalPort": dev.rng.randint(49152, 65535), "Protocol": "Tcp",
            "LocalIPType": "Private", "RemoteIPType": "Public" if not ip.startswith("10.") else "Private",
            **proc.initiating_columns()})

    def registry(self, dev: Device, proc: Proc, ts: datetime, key: str, name: str, data: str,
                 vtype: str = "String", action: str = "RegistryValueSet") -> int:
        return self.emit("DeviceRegistryEvents", dev, ts, {
            "ActionType": action, "RegistryKey": key, "RegistryValueType": vtype,
            "RegistryValueName": name, "RegistryValueData": data, **proc.initiating_columns()})

    def logon(self, dev: Device, proc: Proc, ts: datetime, account: Account, logon_type: str, *,
              success: bool = True, remote_ip: str | None = None, remote_name: str | None = None,
              protocol: str | None = None) -> int:
        cols: Row = {
            "ActionType": "LogonSuccess" if success else "LogonFailed", "LogonType": logon_type,
            "AccountDomain": account.domain, "AccountName": account.name, "AccountSid": account.sid,
            "Protocol": protocol, "FailureReason": None if success else "InvalidUserNameOrPassword",
            "IsLocalAdmin": account.name in ("root", "admin") or (dev.os != "Windows" and account.name == "root"),
            "LogonId": account.logon_id if success else None, "RemoteDeviceName": remote_name,
            "RemoteIP": remote_ip, "RemoteIPType": None if remote_ip is None else (
                "Private" if remote_ip.startswith("10.") else "Public"),
            "RemotePort": None if remote_ip is None else dev.rng.randint(32768, 60999),
            "AdditionalFields": {"IsLocalLogon": remote_ip is None},
            **proc.initiating_columns()}
        return self.emit("DeviceLogonEvents", dev, ts, cols)

    def device_event(self, dev: Device, ts: datetime, action: str, proc: Proc | None = None, **cols: Any) -> int:
        row: Row = {"ActionType": action, **(proc.initiating_columns() if proc else {}), **cols}
        return self.emit("DeviceEvents", dev, ts, row)

    # -- the fleet ------------------------------------------------------------------------------
    def run(self, fleet: list[Device]) -> None:
        for dev in fleet:
            boot_windows(dev) if dev.os == "Windows" else boot_mac(dev) if dev.os == "macOS" else boot_linux(dev)
            self.heartbeats(dev)
            day = datetime(self.start.year, self.start.month, self.start.day)
            while day < self.end:
                self.device_day(dev, day)
                day += timedelta(days=1)
        tvm.add_inventory(self, fleet)
        self.plant_scenarios(fleet)

    def heartbeats(self, dev: Device) -> None:
        """DeviceInfo hourly and DeviceNetworkInfo every six hours, as the sensor reports them."""
        rng = dev.rng
        t = self.start + timedelta(seconds=rng.uniform(0, 3600))
        i = 0
        while t < self.end:
            user = dev.user
            logged_on = [] if user is None else [{"UserName": user.name, "DomainName": NETBIOS if dev.os == "Windows"
                                                  else dev.short_name, "Sid": user.sid if dev.os == "Windows" else None}]
            self.emit("DeviceInfo", dev, t, device_info_columns(dev, logged_on))
            if i % 6 == 0:
                for a in dev.adapters:
                    self.emit("DeviceNetworkInfo", dev, t + timedelta(milliseconds=rng.randint(5, 900)), {
                        "NetworkAdapterName": a.name, "MacAddress": a.mac, "NetworkAdapterType": a.kind,
                        "NetworkAdapterStatus": "Up", "TunnelType": "None",
                        "ConnectedNetworks": [{"Name": "corp.example.com", "Description": "corp.example.com",
                                               "IsConnectedToInternet": True, "Category": "Domain"}],
                        "DnsAddresses": ["10.10.0.10", "10.10.0.11"], "IPv4Dhcp": "10.10.0.5",
                        "IPv6Dhcp": None, "DefaultGateways": [a.gateway],
                        "IPAddresses": [{"IPAddress": a.ip, "SubnetPrefix": a.prefix, "AddressType": "Private"}],
                        "NetworkAdapterVendor": a.vendor})
            t += timedelta(hours=1, seconds=rng.uniform(-30, 30))
            i += 1

    def device_day(self, dev: Device, day: datetime) -> None:
        rng = dev.rng
        budget = self.events_per_day
        weekend = day.weekday() >= 5
        if dev.device_type == "Workstation" and (not weekend or rng.random() < 0.15):
            logon = day + timedelta(hours=rng.uniform(7.5, 9.5))
            logoff = logon + timedelta(hours=rng.uniform(7, 9.5))
            budget -= self.user_logon(dev, logon)
            user_acts = USER_ACTIVITIES[dev.os]
            bg_acts = BACKGROUND[dev.os]
            while budget > 0:
                if rng.random() < 0.75:
                    at = logon + (logoff - logon) * rng.random()
                    budget -= _pick(rng, user_acts)(self, dev, at)
                else:
                    budget -= _pick(rng, bg_acts)(self, dev, day + timedelta(days=rng.random()))
        else:
            acts = BACKGROUND[dev.os]
            budget = budget if dev.device_type == "Server" else budget // 10
            while budget > 0:
                budget -= _pick(rng, acts)(self, dev, day + timedelta(days=rng.random()))

    def user_logon(self, dev: Device, at: datetime) -> int:
        rng = dev.rng
        n = 0
        if dev.os == "Windows":
            acct = dev.user_account(logon_id=rng.randint(100_000, 9_999_999))
            winlogon = dev.procs["winlogon"]
            n += self.logon(dev, dev.procs["lsass"], at, acct, "Interactive", protocol="Negotiate")
            userinit = dev.spawn(winlogon, sw.WINDOWS["userinit"], "C:\\Windows\\system32\\userinit.exe",
                                 at + timedelta(seconds=2), acct, integrity="Medium",
                                 elevation="TokenElevationTypeLimited")
            userinit.session_id = 1
            explorer = dev.spawn(userinit, sw.WINDOWS["explorer"], "C:\\Windows\\Explorer.EXE",
                                 at + timedelta(seconds=3))
            n += self.process_created(dev, userinit) + self.process_created(dev, explorer)
            dev.procs["shell"] = explorer
            n += self.registry(dev, explorer, at + timedelta(seconds=9),
                               f"HKEY_CURRENT_USER\\{acct.sid}\\Software\\Microsoft\\Windows\\CurrentVersion\\Explorer\\Shell Folders",
                               "Desktop", f"C:\\Users\\{acct.name}\\Desktop")
        elif dev.os == "macOS":
            acct = dev.user_account()
            n += self.logon(dev, dev.procs["loginwindow"], at, acct, "Interactive")
            finder = dev.spawn(dev.procs["launchd"], sw.MAC["finder"], sw.MAC["finder"].path,
                               at + timedelta(seconds=4), acct)
            n += self.process_created(dev, finder)
            dev.procs["shell"] = finder
            dev.procs["user"] = finder
        for key in [k for k in dev.procs if k.startswith("app:")]:
            del dev.procs[key]  # apps are restarted after each logon
        return n

    def plant_scenarios(self, fleet: list[Device]) -> None:
        span = self.end - self.start
        mac = fleet[0]
        at = self.start + span * 0.7
        at = at.replace(hour=14, minute=23, second=7, microsecond=412_000) if span >= timedelta(days=1) else at
        if not (self.start <= at < self.end):
            at = self.start + span * 0.7
        if mac.os == "macOS" and mac.user and mac.user.name == SCENARIO_USER:
            plant_usb_scenario(self, mac, at)
        windows = [d for d in fleet if d.os == "Windows"]
        if windows:
            # During the user's last session, so Word's parent explorer.exe is already running.
            shell = windows[0].procs.get("shell")
            when = shell.created + timedelta(minutes=97, seconds=13) if shell else self.start + span * 0.55
            if not (self.start <= when < self.end - timedelta(minutes=2)):
                when = self.start + span * 0.55
                windows[0].procs.pop("shell", None)
            powershell_cradle(self, windows[0], when)


# -- boot: the long-lived system processes (created before the window, so no rows) ---------------
def boot_windows(dev: Device) -> None:
    t = dev.boot
    sysacct = dev.system_account()
    system = Proc(Binary("System"), 4, "", t, sysacct, None, "System", "TokenElevationTypeDefault", 0)
    smss = dev.spawn(system, sw.WINDOWS["smss"], "\\SystemRoot\\System32\\smss.exe", t + timedelta(seconds=1))
    wininit = dev.spawn(smss, sw.WINDOWS["wininit"], "wininit.exe", t + timedelta(seconds=3))
    winlogon = dev.spawn(smss, sw.WINDOWS["winlogon"], "winlogon.exe", t + timedelta(seconds=3, milliseconds=200))
    winlogon.session_id = 1
    services = dev.spawn(wininit, sw.WINDOWS["services"], "C:\\Windows\\system32\\services.exe", t + timedelta(seconds=4))
    lsass = dev.spawn(wininit, sw.WINDOWS["lsass"], "C:\\Windows\\system32\\lsass.exe", t + timedelta(seconds=4))
    svc = sw.WINDOWS["svchost"]
    dcom = dev.spawn(services, svc, "C:\\Windows\\system32\\svchost.exe -k DcomLaunch -p", t + timedelta(seconds=5))
    netsvcs = dev.spawn(services, svc, "C:\\Windows\\system32\\svchost.exe -k netsvcs -p -s Schedule", t + timedelta(seconds=6))
    msmpeng = dev.spawn(services, sw.WINDOWS["msmpeng"], f"\"{sw.WINDOWS['msmpeng'].path}\"", t + timedelta(seconds=8))
    sense = dev.spawn(services, sw.WINDOWS["sense"], f"\"{sw.WINDOWS['sense'].path}\"", t + timedelta(seconds=9))
    dev.procs.update({"system": system, "winlogon": winlogon, "services": services, "lsass": lsass,
                      "dcom": dcom, "schedule": netsvcs, "msmpeng": msmpeng, "sense": sense})


def boot_mac(dev: Device) -> None:
    t = dev.boot
    root = dev.system_account()
    launchd = Proc(sw.MAC["launchd"], 1, "/sbin/launchd", t, root)
    dev.procs["launchd"] = launchd
    dev.procs["loginwindow"] = dev.spawn(launchd, sw.MAC["loginwindow"],
                                         sw.MAC["loginwindow"].path + " console", t + timedelta(seconds=6))
    dev.procs["wdav"] = dev.spawn(launchd, sw.MAC["wdavdaemon"], sw.MAC["wdavdaemon"].path, t + timedelta(seconds=9))
    dev.procs["diskarb"] = dev.spawn(launchd, sw.MAC["diskarbitrationd"], sw.MAC["diskarbitrationd"].path,
                                     t + timedelta(seconds=2))


def boot_linux(dev: Device) -> None:
    t = dev.boot
    root = dev.system_account()
    systemd = Proc(sw.LINUX["systemd"], 1, "/sbin/init splash", t, root)
    dev.procs["systemd"] = systemd
    dev.procs["sshd"] = dev.spawn(systemd, sw.LINUX["sshd"], "sshd: /usr/sbin/sshd -D [listener] 0 of 10-100 startups",
                                  t + timedelta(seconds=7))
    dev.procs["cron"] = dev.spawn(systemd, sw.LINUX["cron"], "/usr/sbin/cron -f -P", t + timedelta(seconds=7))
    dev.procs["wdav"] = dev.spawn(systemd, sw.LINUX["wdavdaemon"], "/opt/microsoft/mdatp/sbin/wdavdaemon",
                                  t + timedelta(seconds=9))
    role = dev.short_name.split("-")[1]
    if role in ("web", "app"):
        dev.procs["nginx"] = dev.spawn(systemd, sw.LINUX["nginx"], "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;",
                                       t + timedelta(seconds=10))
    if role in ("build", "app", "db"):
        dev.procs["dockerd"] = dev.spawn(systemd, sw.LINUX["dockerd"], "/usr/bin/dockerd -H fd:// --containerd=/run/containerd/containerd.sock",
                                         t + timedelta(seconds=11))


# -- activities: each acts at ``at`` and returns how many rows it attempted -----------------------
Activity = Callable[[Simulation, Device, datetime], int]


def _pick(rng: random.Random, acts: list[tuple[float, Activity]]) -> Activity:
    return rng.choices([a for _, a in acts], weights=[w for w, _ in acts])[0]


def _user_shell(dev: Device) -> Proc | None:
    return dev.procs.get("shell")


def win_app(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    shell = _user_shell(dev)
    if shell is None:
        return 1
    user = shell.account.name
    app = rng.choices(["chrome", "msedge", "outlook", "winword", "excel", "teams", "notepad", "code", "onedrive"],
                      weights=[6, 2, 4, 2, 2, 3, 1, 1, 1])[0]
    key = f"app:{app}"
    n = 0
    proc = dev.procs.get(key)
    if proc is None or proc.created >= at:
        b = sw.WINDOWS[app]
        if "{user}" in b.path:
            b = dataclasses.replace(b, path=b.path.format(user=user))
        args = {"chrome": " --profile-directory=Default", "msedge": " --profile-directory=Default",
                "winword": " /n", "excel": " /e", "outlook": " /recycle"}.get(app, "")
        proc = dev.spawn(shell, b, f"\"{b.path}\"{args}", at)
        dev.procs[key] = proc
        n += sim.process_created(dev, proc)
        at += timedelta(seconds=rng.uniform(1, 20))
    if app in ("chrome", "msedge"):
        for _ in range(rng.randint(1, 4)):
            at += jitter(rng, 30)
            n += sim.connection(dev, proc, at, rng.choice(sw.WEB))
        if rng.random() < 0.25:
            url, ip, _ = rng.choice(sw.WEB)
            fname = rng.choice(["report.pdf", "invoice_2024.pdf", "setup.msi", "data.csv", "slides.pptx"])
            n += sim.file_event(dev, proc, at + jitter(rng, 5), f"C:\\Users\\{user}\\Downloads\\{fname}",
                                origin=(f"https://{url}/download/{fname}", ip))
        if rng.random() < 0.3:
            child = dev.spawn(proc, proc.binary, f"\"{proc.binary.path}\" --type=renderer --lang=en-US --field-trial-handle={rng.randint(1000, 9999)}", at + jitter(rng, 3))
            n += sim.process_created(dev, child)
    elif app in ("outlook", "teams", "onedrive"):
        url_pool = [w for w in sw.WEB if "microsoft" in w[0] or "office" in w[0] or "sharepoint" in w[0]]
        for _ in range(rng.randint(1, 3)):
            at += jitter(rng, 60)
            n += sim.connection(dev, proc, at, rng.choice(url_pool))
    elif app in ("winword", "excel", "notepad", "code"):
        ext = {"winword": "docx", "excel": "xlsx", "notepad": "txt", "code": "py"}[app]
        doc = f"C:\\Users\\{user}\\Documents\\{rng.choice(['plan', 'budget', 'notes', 'q3-review', 'draft'])}.{ext}"
        n += sim.file_event(dev, proc, at + jitter(rng, 300), doc, rng.choice(["FileCreated", "FileModified", "FileModified"]))
        if app in ("winword", "excel"):
            n += sim.registry(dev, proc, at + jitter(rng, 60),
                              f"HKEY_CURRENT_USER\\{proc.account.sid}\\Software\\Microsoft\\Office\\16.0\\{'Word' if app == 'winword' else 'Excel'}\\Reading Locations\\Document 0",
                              "File Path", doc)
    return n


WIN_CMDS: list[tuple[str, str]] = [
    ("whoami", "whoami.exe /all"), ("ipconfig", "ipconfig.exe /all"), ("ping", "PING.EXE 10.10.0.1 -n 4"),
    ("net", "net.exe use"), ("tasklist", "tasklist.exe /v"), ("git", "git.exe status"), ("git", "git.exe pull"),
]
PS_COMMANDS = ["Get-Process", "Get-Service | Where-Object Status -eq Running", "Get-ChildItem -Recurse -Filter *.log",
               "Test-NetConnection github.com -Port 443", "Get-NetIPAddress", "Import-Module ActiveDirectory"]


def win_shell(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    shell = _user_shell(dev)
    if shell is None:
        return 1
    ps = rng.random() < 0.45
    b = sw.WINDOWS["powershell" if ps else "cmd"]
    host = dev.spawn(shell, b, f"\"{b.path}\"" + (" " if ps else ""), at)
    n = sim.process_created(dev, host)
    conhost = dev.spawn(host, sw.WINDOWS["conhost"], "\\??\\C:\\Windows\\system32\\conhost.exe 0xffffffff -ForceV1",
                        at + timedelta(milliseconds=rng.randint(5, 60)))
    n += sim.process_created(dev, conhost)
    t = at
    for _ in range(rng.randint(1, 4)):
        t += timedelta(seconds=rng.uniform(3, 120))
        if ps:
            cmd = rng.choice(PS_COMMANDS)
            n += sim.device_event(dev, t, "PowerShellCommand", host, AdditionalFields={"Command": cmd.split(" ")[0]})
            if cmd.startswith("Test-NetConnection"):
                n += sim.connection(dev, host, t + jitter(rng, 1), ("github.com", "140.82.121.4", 443))
        else:
            key, line = rng.choice(WIN_CMDS)
            child = dev.spawn(host, sw.WINDOWS[key], line, t)
            n += sim.process_created(dev, child)
            if key == "git" and "pull" in line:
                n += sim.connection(dev, child, t + jitter(rng, 1), ("github.com", "140.82.121.4", 443))
    return n


def win_background(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    r = rng.random()
    if r < 0.3:
        proc = dev.spawn(dev.procs["schedule"], sw.WINDOWS["taskhostw"], "taskhostw.exe Install $(Arg0)", at)
        return sim.process_created(dev, proc)
    if r < 0.5:
        proc = dev.spawn(dev.procs["dcom"], sw.WINDOWS["wmiprvse"], "C:\\Windows\\system32\\wbem\\wmiprvse.exe -secured -Embedding", at)
        return sim.process_created(dev, proc)
    if r < 0.65:
        mp = dev.procs["msmpeng"]
        cmd = dev.spawn(mp, sw.WINDOWS["mpcmdrun"], f"\"{sw.WINDOWS['mpcmdrun'].path}\" SignatureUpdate -ScheduleJob -RestrictPrivileges", at)
        n = sim.process_created(dev, cmd)
        n += sim.connection(dev, cmd, at + jitter(rng, 5), sw.UPDATE[1])
        n += sim.device_event(dev, at + timedelta(seconds=40), "AntivirusDefinitionsUpdated", mp,
                              AdditionalFields={"Description": "Security intelligence updated", "Version": "1.413.402.0"})
        return n
    if r < 0.8:
        sense = dev.procs["sense"]
        return sim.connection(dev, sense, at, sw.UPDATE[0])
    if r < 0.92:
        svc = dev.procs["services"]
        return sim.registry(dev, svc, at, "HKEY_LOCAL_MACHINE\\SYSTEM\\ControlSet001\\Services\\bam\\State\\UserSettings",
                            "Start", "2", vtype="Dword")
    # Network logon from the file server, as SMB access to the laptop's admin share looks.
    acct = Account(NETBIOS.lower(), "svc_backup", f"{TENANT_SID}-2201", logon_id=rng.randint(100_000, 9_999_999))
    return sim.logon(dev, dev.procs["lsass"], at, acct, "Network", remote_ip="10.20.0.9",
                     remote_name="srv-files-01", protocol="NTLM", success=rng.random() < 0.9)


MAC_CMDS: list[tuple[str, str]] = [
    ("ls", "ls -la"), ("git", "git status"), ("git", "git pull --rebase"), ("curl", "curl -sSL https://api.github.com/zen"),
    ("python3", "python3 manage.py test"), ("vim", "vim notes.md"), ("ssh", "ssh srv-jump-01.corp.example.com"),
    ("brew", "/opt/homebrew/bin/brew upgrade"), ("cat", "cat ~/.zshrc"),
]


def mac_app(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    if "shell" not in dev.procs:
        return 1
    app = rng.choices(["chrome", "safari", "outlook", "slack"], weights=[5, 2, 3, 3])[0]
    key = f"app:{app}"
    proc = dev.procs.get(key)
    n = 0
    if proc is None or proc.created >= at:
        b = sw.MAC[app]
        proc = dev.spawn(dev.procs["launchd"], b, b.path, at, dev.user_account())
        dev.procs[key] = proc
        n += sim.process_created(dev, proc)
    for _ in range(rng.randint(1, 4)):
        at += jitter(rng, 40)
        n += sim.connection(dev, proc, at, rng.choice(sw.WEB))
    if app in ("chrome", "safari") and rng.random() < 0.2:
        url, ip, _ = rng.choice(sw.WEB)
        fname = rng.choice(["report.pdf", "data.csv", "photo.jpg", "installer.dmg"])
        n += sim.file_event(dev, proc, at + jitter(rng, 5), f"/Users/{proc.account.name}/Downloads/{fname}",
                            origin=(f"https://{url}/download/{fname}", ip))
    return n


def mac_terminal(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    if "shell" not in dev.procs:
        return 1
    term, zsh, n = open_mac_terminal(sim, dev, at)
    t = at + timedelta(seconds=2)
    user = zsh.account.name
    for _ in range(rng.randint(1, 5)):
        t += timedelta(seconds=rng.uniform(2, 90))
        key, line = rng.choice(MAC_CMDS)
        child = dev.spawn(zsh, sw.MAC[key], line, t)
        n += sim.process_created(dev, child)
        if key in ("curl", "ssh", "brew") or "pull" in line:
            target = {"curl": ("api.github.com", "140.82.121.6", 443), "ssh": ("srv-jump-01.corp.example.com", "10.20.0.7", 22),
                      "brew": ("github.com", "140.82.121.4", 443)}.get(key, ("github.com", "140.82.121.4", 443))
            n += sim.connection(dev, child, t + jitter(rng, 1), target)
        if key == "vim":
            n += sim.file_event(dev, child, t + jitter(rng, 60), f"/Users/{user}/notes.md", "FileModified")
        if key == "git" and "pull" in line:
            n += sim.file_event(dev, child, t + jitter(rng, 3), f"/Users/{user}/src/app/.git/FETCH_HEAD", "FileModified")
    return n


def open_mac_terminal(sim: Simulation, dev: Device, at: datetime) -> tuple[Proc, Proc, int]:
    """Terminal (launched by launchd, as from the Dock) and the user's login zsh inside it."""
    acct = dev.user_account()
    term = dev.spawn(dev.procs["launchd"], sw.MAC["terminal"], sw.MAC["terminal"].path, at, acct)
    zsh = dev.spawn(term, sw.MAC["zsh"], "-zsh", at + timedelta(milliseconds=dev.rng.randint(80, 400)))
    return term, zsh, sim.process_created(dev, term) + sim.process_created(dev, zsh)


def mac_background(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    r = rng.random()
    launchd = dev.procs["launchd"]
    if r < 0.5:
        md = dev.spawn(launchd, sw.MAC["mdworker"], sw.MAC["mdworker"].path + " -s mdworker -c MDSImporterWorker -m com.apple.mdworker.shared", at)
        return sim.process_created(dev, md)
    if r < 0.7:
        su = dev.spawn(launchd, sw.MAC["softwareupdated"], sw.MAC["softwareupdated"].path, at)
        return sim.process_created(dev, su) + sim.connection(dev, su, at + jitter(rng, 3), sw.UPDATE[4])
    return sim.connection(dev, dev.procs["wdav"], at, sw.UPDATE[0])


def linux_cron(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    cron = dev.procs["cron"]
    job = rng.choice([
        ("sh", "/bin/sh -c cd / && run-parts --report /etc/cron.hourly", "runparts", "run-parts --report /etc/cron.hourly"),
        ("sh", "/bin/sh -c /usr/sbin/logrotate /etc/logrotate.conf", "logrotate", "/usr/sbin/logrotate /etc/logrotate.conf"),
        ("sh", "/bin/sh -c tar czf /var/backups/etc.tgz /etc", "tar", "tar czf /var/backups/etc.tgz /etc"),
    ])
    sh = dev.spawn(cron, sw.LINUX["sh"], job[1], at)
    child = dev.spawn(sh, sw.LINUX[job[2]], job[3], at + timedelta(milliseconds=rng.randint(2, 30)))
    n = sim.process_created(dev, sh) + sim.process_created(dev, child)
    if job[2] == "tar":
        n += sim.file_event(dev, child, child.created + jitter(rng, 20), "/var/backups/etc.tgz", "FileModified")
    elif job[2] == "logrotate":
        n += sim.file_event(dev, child, child.created + jitter(rng, 5), "/var/log/syslog.1", "FileCreated")
    return n


LINUX_ADMIN_CMDS: list[tuple[str, str]] = [
    ("ps", "ps aux"), ("cat", "cat /etc/os-release"), ("systemctl", "systemctl status nginx"),
    ("journalctl", "journalctl -u ssh --since today"), ("docker", "docker ps"), ("vim", "vim /etc/hosts"),
]


def linux_ssh_session(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    sshd = dev.procs["sshd"]
    admin = Account(dev.short_name, "admin", None, logon_id=None)
    n = sim.emit("DeviceNetworkEvents", dev, at, {
        "ActionType": "InboundConnectionAccepted", "RemoteIP": "10.20.0.7", "RemotePort": rng.randint(40000, 60999),
        "LocalIP": dev.ip, "LocalPort": 22, "Protocol": "Tcp", "LocalIPType": "Private", "RemoteIPType": "Private",
        **sshd.initiating_columns()})
    n += sim.logon(dev, sshd, at + timedelta(milliseconds=300), admin, "Network", remote_ip="10.20.0.7",
                   remote_name="srv-jump-01")
    priv = dev.spawn(sshd, sw.LINUX["sshd"], "sshd: admin [priv]", at + timedelta(milliseconds=350))
    bash = dev.spawn(priv, sw.LINUX["bash"], "-bash", at + timedelta(milliseconds=600), admin)
    n += sim.process_created(dev, priv) + sim.process_created(dev, bash)
    t = bash.created
    for _ in range(rng.randint(1, 4)):
        t += timedelta(seconds=rng.uniform(2, 120))
        if rng.random() < 0.3:
            sudo = dev.spawn(bash, sw.LINUX["sudo"], "sudo apt update", t)
            apt = dev.spawn(sudo, sw.LINUX["apt"], "apt update", t + timedelta(milliseconds=40), dev.system_account())
            n += sim.process_created(dev, sudo) + sim.process_created(dev, apt)
            n += sim.connection(dev, apt, t + jitter(rng, 2), sw.UPDATE[2])
        else:
            key, line = rng.choice(LINUX_ADMIN_CMDS)
            n += sim.process_created(dev, dev.spawn(bash, sw.LINUX[key], line, t))
    return n


def linux_service(sim: Simulation, dev: Device, at: datetime) -> int:
    rng = dev.rng
    if "nginx" in dev.procs:
        nginx = dev.procs["nginx"]
        n = 0
        for _ in range(rng.randint(1, 6)):
            at += jitter(rng, 20)
            n += sim.emit("DeviceNetworkEvents", dev, at, {
                "ActionType": "InboundConnectionAccepted", "RemoteIP": f"{rng.randint(20, 220)}.{rng.randint(0, 255)}.{rng.randint(0, 255)}.{rng.randint(1, 254)}",
                "RemotePort": rng.randint(1024, 65535), "LocalIP": dev.ip, "LocalPort": 443, "Protocol": "Tcp",
                "LocalIPType": "Private", "RemoteIPType": "Public", **nginx.initiating_columns()})
        return n
    if "dockerd" in dev.procs:
        return sim.connection(dev, dev.procs["dockerd"], at, sw.UPDATE[5])
    return sim.connection(dev, dev.procs["wdav"], at, sw.UPDATE[0])


def linux_bruteforce(sim: Simulation, dev: Device, at: datetime) -> int:
    """Internet SSH password spraying against the public servers: bursts of failed logons."""
    rng = dev.rng
    if dev.short_name.split("-")[1] not in ("web", "jump"):
        return linux_service(sim, dev, at)
    ip = rng.choice(sw.ATTACKER_IPS)
    sshd = dev.procs["sshd"]
    n = 0
    for _ in range(rng.randint(5, 20)):
        at += timedelta(seconds=rng.uniform(0.5, 4))
        user = rng.choice(["root", "admin", "ubuntu", "test", "oracle", "postgres"])
        n += sim.logon(dev, sshd, at, Account(dev.short_name, user, None), "Network", success=False, remote_ip=ip)
    return n


USER_ACTIVITIES: dict[str, list[tuple[float, Activity]]] = {
    "Windows": [(6, win_app), (2, win_shell)],
    "macOS": [(5, mac_app), (2, mac_terminal)],
    "Linux": [],
}
BACKGROUND: dict[str, list[tuple[float, Activity]]] = {
    "Windows": [(1, win_background)],
    "macOS": [(1, mac_background)],
    "Linux": [(3, linux_cron), (2, linux_ssh_session), (4, linux_service), (0.4, linux_bruteforce)],
}


def powershell_cradle(sim: Simulation, dev: Device, at: datetime) -> None:
    """Word spawning an encoded PowerShell download cradle that drops an executable: an alert."""
    rng = random.Random(f"quarry-demo-cradle:{sim.seed}")
    shell = dev.procs.get("shell") or dev.procs["services"]
    word = dev.spawn(shell, sw.WINDOWS["winword"], f"\"{sw.WINDOWS['winword'].path}\" /n \"C:\\Users\\{dev.user.name if dev.user else 'user'}\\Downloads\\Invoice_8841.docm\"", at, dev.user_account(rng.randint(100_000, 9_999_999)))
    sim.process_created(dev, word)
    enc = "SQBFAFgAIAAoAE4AZQB3AC0ATwBiAGoAZQBjAHQAIABOAGUAdAAuAFcAZQBiAEMAbABpAGUAbgB0ACkA"
    ps = dev.spawn(word, sw.WINDOWS["powershell"], f"powershell.exe -NoP -W Hidden -enc {enc}", at + timedelta(seconds=7))
    sim.process_created(dev, ps)
    url, ip, port = sw.SUSPICIOUS
    sim.connection(dev, ps, ps.created + timedelta(seconds=2), sw.SUSPICIOUS)
    dropped = f"C:\\Users\\{ps.account.name}\\AppData\\Local\\Temp\\update.exe"
    sim.file_event(dev, ps, ps.created + timedelta(seconds=3), dropped, size=245_760,
                   origin=(f"https://{url}/u/update.exe", ip))
    sim.device_event(dev, ps.created + timedelta(seconds=2), "PowerShellCommand", ps,
                     AdditionalFields={"Command": "Invoke-Expression"})
    t = ps.created + timedelta(seconds=40)
    alert_id = "da" + rand_guid(rng).replace("-", "")[:18]
    title = "Suspicious PowerShell download cradle launched by Office"
    techniques = '["Command and Scripting Interpreter: PowerShell (T1059.001)", "Phishing: Spearphishing Attachment (T1566.001)"]'
    if sim.start <= t < sim.end:
        sim.rows["AlertInfo"].append({
            "Timestamp": t, "AlertId": alert_id, "Title": title, "Category": "Execution", "Severity": "High",
            "ServiceSource": "Microsoft Defender for Endpoint", "DetectionSource": "EDR",
            "AttackTechniques": techniques})
        file_sha1 = Binary(dropped, "245760").sha1
        sim.emit("DeviceAlertEvents", dev, t, {
            "AlertId": alert_id, "Severity": "High", "Category": "Execution", "Title": title,
            "FileName": "update.exe", "SHA1": file_sha1, "RemoteUrl": url, "RemoteIP": ip,
            "AttackTechniques": techniques, "Table": "DeviceProcessEvents"})
        base = {"Timestamp": t, "AlertId": alert_id, "Title": title, "Categories": '["Execution"]',
                "AttackTechniques": techniques, "ServiceSource": "Microsoft Defender for Endpoint",
                "DetectionSource": "EDR", "Severity": "High"}
        acct = ps.account
        for entity in (
            {"EntityType": "Machine", "EvidenceRole": "Impacted", "DeviceId": dev.device_id, "DeviceName": dev.name,
             "LocalIP": dev.ip},
            {"EntityType": "Process", "EvidenceRole": "Related", "FileName": "powershell.exe",
             "FolderPath": sw.WINDOWS["powershell"].path, "SHA1": sw.WINDOWS["powershell"].sha1,
             "SHA256": sw.WINDOWS["powershell"].sha256, "ProcessCommandLine": ps.cmdline,
             "DeviceId": dev.device_id, "DeviceName": dev.name},
            {"EntityType": "File", "EvidenceRole": "Impacted", "FileName": "update.exe", "FolderPath": dropped,
             "SHA1": file_sha1, "SHA256": Binary(dropped, "245760").sha256, "FileSize": 245_760,
             "DeviceId": dev.device_id, "DeviceName": dev.name},
            {"EntityType": "Url", "EvidenceRole": "Related", "RemoteUrl": f"https://{url}/u/update.exe"},
            {"EntityType": "Ip", "EvidenceRole": "Related", "RemoteIP": ip},
            {"EntityType": "User", "EvidenceRole": "Impacted", "AccountName": acct.name, "AccountDomain": acct.domain,
             "AccountSid": acct.sid, "AccountObjectId": acct.object_id, "AccountUpn": acct.upn},
        ):
            sim.rows["AlertEvidence"].append({**base, "EvidenceDirection": None, "AdditionalFields": {}, **entity})


def device_info_columns(dev: Device, logged_on: list[dict[str, Any]]) -> Row:
    return {
        "ClientVersion": dev.client_version, "PublicIP": dev.public_ip, "OSArchitecture": "64-bit",
        "OSPlatform": dev.platform, "OSBuild": dev.os_build, "IsAzureADJoined": dev.os == "Windows",
        "JoinType": "Hybrid Azure AD Join" if dev.os == "Windows" else None,
        "AadDeviceId": dev.aad_device_id if dev.os == "Windows" else None,
        "LoggedOnUsers": logged_on, "RegistryDeviceTag": None, "OSVersion": dev.os_version,
        "MachineGroup": dev.machine_group, "OnboardingStatus": "Onboarded",
        "AdditionalFields": None,
        "DeviceCategory": "Endpoint", "DeviceType": dev.device_type, "DeviceSubtype": None,
        "Model": dev.model, "Vendor": dev.vendor, "OSDistribution": dev.distribution,
        "OSVersionInfo": dev.os_version_info, "MergedDeviceIds": None, "MergedToDeviceId": None,
        "IsInternetFacing": dev.short_name.startswith(("srv-web", "srv-jump")), "SensorHealthState": "Active",
        "IsExcluded": False, "ExclusionReason": None,
        "ExposureLevel": "Medium" if dev.device_type == "Server" else "Low",
        "AssetValue": "High" if dev.device_type == "Server" else "Normal",
        "DeviceManualTags": ["demo"], "DeviceDynamicTags": [dev.os],
        "ConnectivityType": "Streamlined", "HostDeviceId": None, "AzureResourceId": None,
        "AwsResourceName": None, "GcpFullResourceName": None,
    }


def _hex(text: str, width: int) -> str:
    return Binary(text).sha256[:width].upper()


def generate(
    catalog: Catalog,
    *,
    start: datetime,
    end: datetime,
    devices: int = 40,
    seed: int = 0,
    events_per_device_per_day: int = DEFAULT_EVENTS_PER_DEVICE_PER_DAY,
    tables: set[str] | None = None,
) -> dict[str, pa.Table]:
    """A realistic dataset for every catalog table (or ``tables``), deterministic for a seed.

    ``start``/``end`` bound every Timestamp (aware datetimes are converted to UTC; naive ones are
    taken as UTC). ``events_per_device_per_day`` is the approximate number of event rows per
    workstation or server day over all event tables; heartbeat tables come on top.
    """
    start, end = _naive_utc(start), _naive_utc(end)
    if end <= start:
        raise ValueError(f"generate: end ({end.isoformat()}) must be after start ({start.isoformat()})")
    if devices < 1:
        raise ValueError(f"generate: devices must be at least 1, got {devices}")
    if events_per_device_per_day < 1:
        raise ValueError(f"generate: events_per_device_per_day must be at least 1, got {events_per_device_per_day}")
    wanted = set(catalog.tables) if tables is None else set(tables)
    unknown = sorted(t for t in wanted if catalog.table(t) is None)
    if unknown:
        hints = {t: catalog.suggest(t) for t in unknown}
        raise ValueError(f"generate: unknown tables {unknown}; did you mean {hints}?")
    sim = Simulation(start, end, seed, events_per_device_per_day)
    sim.run(build_fleet(devices, seed, start))
    out: dict[str, pa.Table] = {}
    for name in sorted(wanted):
        table = catalog.tables[name]
        rows = sim.rows.get(name, [])
        if table.has_timestamp:
            rows.sort(key=lambda r: (r["Timestamp"], r.get("DeviceId") or "", r.get("ReportId") or 0))
        out[name] = rows_to_table(table, rows)
    return out

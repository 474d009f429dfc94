"""Vulnerability-management and baseline snapshot tables, derived from the same fleet.

Inventory follows what the fleet runs (the Chrome and Office versions that appear in process
events are the ones inventoried), and vulnerabilities point at CVEs listed in the KB table, so
joins between the Tvm tables and the event tables find each other.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from server.demo.model import Binary, Device

if TYPE_CHECKING:
    from server.demo.generator import Simulation

# (vendor, name, version, cpe product) by OS
SOFTWARE: dict[str, list[tuple[str, str, str, str]]] = {
    "Windows": [
        ("microsoft", "windows_11", "10.0.22631.3737", "microsoft:windows_11"),
        ("google", "chrome", "126.0.6478.127", "google:chrome"),
        ("microsoft", "edge_chromium-based", "126.0.2592.87", "microsoft:edge_chromium-based"),
        ("microsoft", "office", "16.0.17628.20144", "microsoft:office"),
        ("microsoft", "teams", "24152.412.2958.916", "microsoft:teams"),
        ("git-scm", "git", "2.45.2.1", "git-scm:git"),
        ("7-zip", "7-zip", "23.01", "7-zip:7-zip"),
    ],
    "macOS": [
        ("apple", "macos", "14.5", "apple:macos"),
        ("google", "chrome", "126.0.6478.127", "google:chrome"),
        ("microsoft", "outlook", "16.86", "microsoft:outlook"),
        ("slack", "slack", "4.38.125", "slack:slack"),
        ("apple", "safari", "17.5", "apple:safari"),
    ],
    "Linux": [
        ("canonical", "ubuntu_linux", "22.04", "canonical:ubuntu_linux"),
        ("openbsd", "openssh", "8.9p1", "openbsd:openssh"),
        ("f5", "nginx", "1.18.0", "f5:nginx"),
        ("docker", "docker", "26.1.4", "docker:docker"),
        ("python", "python", "3.10.12", "python:python"),
        ("gnu", "tar", "1.34", "gnu:tar"),
    ],
}

# CveId -> (affected software name, severity, CVSS, exploit available, published, description, fix)
CVES: dict[str, tuple[str, str, str, bool, datetime, str, str | None]] = {
    "CVE-2024-6100": ("chrome", "High", "8.8", False, datetime(2024, 6, 18), "Type confusion in V8 in Google Chrome before 126.0.6478.114 allowed a remote attacker to execute arbitrary code via a crafted HTML page.", None),
    "CVE-2024-6387": ("openssh", "High", "8.1", True, datetime(2024, 7, 1), "A signal handler race condition in sshd (regreSSHion) may allow unauthenticated remote code execution as root on glibc-based Linux systems.", None),
    "CVE-2023-31102": ("7-zip", "High", "7.8", False, datetime(2023, 11, 3), "Integer underflow in Ppmd7.c in 7-Zip before 23.00 allows arbitrary code execution via a crafted archive.", None),
    "CVE-2024-30103": ("office", "High", "8.8", False, datetime(2024, 6, 11), "Microsoft Outlook remote code execution vulnerability.", "KB5002600"),
    "CVE-2021-23017": ("nginx", "High", "7.7", True, datetime(2021, 6, 1), "A 1-byte memory overwrite in the nginx resolver may allow a DNS server to crash nginx or possibly execute code.", None),
    "CVE-2024-27280": ("macos", "Medium", "5.5", False, datetime(2024, 5, 13), "A logic issue in macOS Sonoma before 14.5 may allow an app to read sensitive location information.", None),
}

CONFIGS: list[tuple[str, str, str, str, float, str]] = [
    ("scid-2000", "Security Controls", "Antivirus", "Turn on Microsoft Defender Antivirus", 9.0, "Windows"),
    ("scid-2010", "Security Controls", "Antivirus", "Update Microsoft Defender Antivirus definitions", 9.0, "Windows"),
    ("scid-91", "Security Controls", "BitLocker", "Encrypt all BitLocker-supported drives", 6.0, "Windows"),
    ("scid-5095", "Accounts", "Local accounts", "Disable the built-in Administrator account", 5.0, "Windows"),
    ("scid-5001", "Security Controls", "Firewall", "Turn on macOS firewall", 6.0, "macOS"),
    ("scid-6080", "OS", "SSH", "Disable SSH root login", 7.0, "Linux"),
]


def add_inventory(sim: Simulation, fleet: list[Device]) -> None:
    rows = sim.rows
    snap = sim.end - timedelta(hours=2)
    for dev in fleet:
        rng = dev.rng
        base = {"DeviceId": dev.device_id, "DeviceName": dev.name, "OSPlatform": dev.platform,
                "OSVersion": dev.os_version, "OSArchitecture": "x64" if dev.os != "macOS" else "arm64"}
        for vendor, name, version, cpe in SOFTWARE[dev.os]:
            rows["DeviceTvmSoftwareInventory"].append({
                **base, "SoftwareVendor": vendor, "SoftwareName": name, "SoftwareVersion": version,
                "EndOfSupportStatus": "EOS Version" if name == "nginx" else None, "EndOfSupportDate": None,
                "ProductCodeCpe": f"cpe:2.3:a:{cpe}:{version}:*:*:*:*:*:*:*"})
            rows["DeviceTvmSoftwareEvidenceBeta"].append({
                "DeviceId": dev.device_id, "SoftwareVendor": vendor, "SoftwareName": name, "SoftwareVersion": version,
                "RegistryPaths": [f"HKEY_LOCAL_MACHINE\\SOFTWARE\\Microsoft\\Windows\\CurrentVersion\\Uninstall\\{name}"]
                if dev.os == "Windows" else [],
                "DiskPaths": [_disk_path(dev, name)], "LastSeenTime": snap.strftime("%Y-%m-%d %H:%M:%S")})
            for cve, (sw_name, sev, _, _, _, _, fix) in CVES.items():
                if sw_name == name:
                    rows["DeviceTvmSoftwareVulnerabilities"].append({
                        **base, "SoftwareVendor": vendor, "SoftwareName": name, "SoftwareVersion": version,
                        "CveId": cve, "VulnerabilitySeverityLevel": sev,
                        "RecommendedSecurityUpdate": f"Update {name}" if fix is None else f"Security update {fix}",
                        "RecommendedSecurityUpdateId": fix, "CveTags": ["ZeroDay"] if cve == "CVE-2024-6387" else []})
        day = datetime(sim.start.year, sim.start.month, sim.start.day) + timedelta(hours=3)
        while day < sim.end:
            for cid, cat, sub, _, impact, os in CONFIGS:
                if os != dev.os:
                    continue
                compliant = rng.random() < 0.8
                sim.emit("DeviceTvmSecureConfigurationAssessment", dev, day + timedelta(seconds=rng.uniform(0, 600)), {
                    "OSPlatform": dev.platform, "ConfigurationId": cid, "ConfigurationCategory": cat,
                    "ConfigurationSubcategory": sub, "ConfigurationImpact": impact, "IsCompliant": compliant,
                    "IsApplicable": True, "Context": [[None, compliant, None, None]] if compliant else [],
                    "IsExpectedUserImpact": False})
            sim.emit("DeviceTvmInfoGathering", dev, day + timedelta(seconds=rng.uniform(600, 1200)), {
                "LastSeenTime": day + timedelta(seconds=rng.uniform(0, 600)), "OSPlatform": dev.platform,
                "AdditionalFields": {"AsrMode": "Audit" if dev.os == "Windows" else None,
                                     "TlsClient10": "Disabled", "TlsServer10": "Disabled",
                                     "SmbServerEnableSecuritySignature": dev.os == "Windows"}})
            day += timedelta(days=1)
        for ctype, manu, name, family, version in _hardware(dev):
            rows["DeviceTvmHardwareFirmware"].append({
                "DeviceId": dev.device_id, "DeviceName": dev.name, "ComponentType": ctype, "Manufacturer": manu,
                "ComponentName": name, "ComponentFamily": family, "ComponentVersion": version,
                "AdditionalFields": {"Description": f"{manu} {name}"}})
        if dev.device_type == "Workstation":
            for ext_id, ext_name, _, risk in EXTENSIONS:
                rows["DeviceTvmBrowserExtensions"].append({
                    "DeviceId": dev.device_id, "BrowserName": "chrome", "ExtensionId": ext_id, "ExtensionName": ext_name,
                    "ExtensionDescription": f"{ext_name} for Chrome", "ExtensionVersion": "1.0.0", "ExtensionRisk": risk,
                    "ExtensionVendor": ext_name.split(" ")[0], "IsActivated": "true",
                    "InstallationTime": dev.boot - timedelta(days=rng.randint(10, 300))})
        thumb = Binary(dev.device_id, "cert").sha1.upper()
        rows["DeviceTvmCertificateInfo"].append({
            "DeviceId": dev.device_id, "Thumbprint": thumb,
            "Path": "Cert:\\LocalMachine\\My" if dev.os == "Windows" else "/etc/ssl/certs",
            "SerialNumber": thumb[:32], "IssuedTo": {"CommonName": dev.name}, "IssuedBy": {"CommonName": "Corp Issuing CA 1"},
            "FriendlyName": dev.short_name, "SignatureAlgorithm": "sha256RSA", "KeySize": "2048",
            "ExpirationDate": "2025-09-30 12:00:00", "IssueDate": "2024-09-30 12:00:00", "SubjectType": "End entity",
            "KeyUsage": "DigitalSignature, KeyEncipherment", "ExtendedKeyUsage": "Client Authentication"})
        if dev.os == "Windows":
            for cid, _, _, _, rec in BASELINE:
                cur = rec if rng.random() < 0.85 else "0"
                rows["DeviceBaselineComplianceAssessment"].append({
                    **{k: base[k] for k in ("DeviceId", "DeviceName", "OSPlatform", "OSVersion")},
                    "ConfigurationId": cid, "ProfileId": PROFILE_ID, "IsCompliant": cur == rec, "IsApplicable": True,
                    "Source": ["Registry"], "RecommendedValue": [rec], "CurrentValue": [cur], "IsExempt": False})
    _knowledge_bases(sim)


EXTENSIONS = [
    ("cjpalhdlnbpafiamejdnhcphjbkeiagm", "uBlock Origin", "Finally, an efficient wide-spectrum content blocker.", "Low"),
    ("nngceckbapebfimnlniiiahkandclblb", "Bitwarden Password Manager", "A secure and free password manager.", "Medium"),
    ("aapbdbdomjkkjkaonfhkkikfgjllcleb", "Google Translate", "View translations easily as you browse the web.", "Medium"),
]
PROFILE_ID = "9c7e2bd1-6d2e-4f1e-9a55-2f0c8a3b1d11"
BASELINE = [
    ("bcid-1001", "Ensure 'Minimum password length' is set to '14 or more character(s)'", "1.1.4", "Account Policies", "14"),
    ("bcid-1002", "Ensure 'Accounts: Guest account status' is set to 'Disabled'", "2.3.1.2", "Local Policies", "0"),
    ("bcid-1003", "Ensure 'Windows Firewall: Domain: Firewall state' is set to 'On'", "9.1.1", "Windows Firewall", "1"),
]


def _knowledge_bases(sim: Simulation) -> None:
    rows = sim.rows
    for cve, (name, sev, cvss, exploit, published, desc, _) in CVES.items():
        rows["DeviceTvmSoftwareVulnerabilitiesKB"].append({
            "CveId": cve, "CvssScore": cvss, "IsExploitAvailable": exploit, "VulnerabilitySeverityLevel": sev,
            "LastModifiedTime": published + timedelta(days=30), "PublishedDate": published,
            "VulnerabilityDescription": desc, "AffectedSoftware": [name]})
    for cid, cat, sub, name, impact, os in CONFIGS:
        rows["DeviceTvmSecureConfigurationAssessmentKB"].append({
            "ConfigurationId": cid, "ConfigurationImpact": impact, "ConfigurationName": name,
            "ConfigurationDescription": name + ".", "RiskDescription": f"Without this, {sub.lower()} protection is weaker.",
            "ConfigurationCategory": cat, "ConfigurationSubcategory": sub,
            "ConfigurationBenchmarks": [{"BenchmarkName": "CIS", "Controls": [], "BenchmarkVersion": "1.0.0"}],
            "Tags": [os], "RemediationOptions": f"Apply the '{name}' setting through policy."})
    for ig_id, field, desc in [("IG-1", "AsrMode", "Attack surface reduction rules mode"),
                               ("IG-2", "TlsClient10", "TLS 1.0 client status"),
                               ("IG-3", "TlsServer10", "TLS 1.0 server status"),
                               ("IG-4", "SmbServerEnableSecuritySignature", "SMB server signing")]:
        rows["DeviceTvmInfoGatheringKB"].append({"IgId": ig_id, "FieldName": field, "Description": desc,
                                                 "Categories": ["tls" if "Tls" in field else "security controls"],
                                                 "DataStructure": "String"})
    for ext_id, ext_name, desc, risk in EXTENSIONS:
        rows["DeviceTvmBrowserExtensionsKB"].append({
            "BrowserName": "chrome", "ExtensionId": ext_id, "ExtensionName": ext_name, "ExtensionDescription": desc,
            "ExtensionVersion": ["1.0.0"], "ExtensionRisk": risk, "PermissionId": f"{ext_id}-tabs",
            "PermissionName": "tabs", "PermissionDescription": "Read your browsing history",
            "PermissionRisk": "Medium", "IsPermissionRequired": "true"})
    for cid, name, cce, cat, rec in BASELINE:
        rows["DeviceBaselineComplianceAssessmentKB"].append({
            "ConfigurationId": cid, "ConfigurationName": name, "ConfigurationDescription": name,
            "ConfigurationRationale": "Reduces the attack surface.", "ConfigurationCategory": cat,
            "BenchmarkProfileLevels": ["Level 1 (L1) - Corporate/Enterprise Environment"], "CCEReference": f"CCE-{cce}",
            "RemediationOptions": "Set through Group Policy.", "ConfigurationBenchmark": "CIS Microsoft Windows 11 Enterprise",
            "Source": ["Registry"], "RecommendedValue": [rec]})
    rows["DeviceBaselineComplianceProfiles"].append({
        "ProfileId": PROFILE_ID, "ProfileName": "CIS Windows 11 L1", "ProfileDescription": "Corporate laptop baseline",
        "OSPlatform": ["Windows11", "Windows10"], "OSVersion": "Windows 11", "BaseBenchmark": "CIS",
        "BenchmarkVersion": "3.0.0", "BenchmarkProfileLevel": "Level 1 (L1) - Corporate/Enterprise Environment",
        "Status": True, "CreatedBy": "admin@corp.example.com", "CreatedOn": datetime(2024, 3, 4, 10, 0),
        "LastUpdatedBy": "admin@corp.example.com", "LastUpdatedOn": datetime(2024, 5, 2, 16, 30)})


def _disk_path(dev: Device, name: str) -> str:
    if dev.os == "Windows":
        return f"C:\\Program Files\\{name}"
    if dev.os == "macOS":
        return f"/Applications/{name}.app"
    return f"/usr/bin/{name}"


def _hardware(dev: Device) -> list[tuple[str, str, str, str, str]]:
    parts: list[tuple[str, str, str, str, str]] = [("Bios", dev.vendor, "BIOS", dev.model, "1.18.0")]
    if dev.os == "macOS":
        parts.append(("Processor", "Apple", "Apple M2 Pro", "Apple Silicon", "M2"))
    else:
        parts.append(("Processor", "Intel", "Intel(R) Core(TM) i7-1365U", "13th Gen Intel Core", "13"))
    return parts

"""Executables, libraries and remote endpoints the synthetic fleet uses.

Paths, version resources and command lines follow what these programs look like in real
Defender data, so demo hunting queries (``FileName =~ "powershell.exe"``, ``FolderPath
startswith "/Volumes/"``...) behave as they would on a real tenant.
"""

from __future__ import annotations

from server.demo.model import Binary

_MS = "Microsoft Corporation"
_WIN = "Microsoft® Windows® Operating System"
_WV = "10.0.22621.3527"


def _w(path: str, desc: str, size: int, *, company: str = _MS, product: str = _WIN,
       version: str = _WV, signer: str = "OsVendor") -> Binary:
    return Binary(path, version, company, product, desc, size, signer, "Valid")


def _u(path: str, size: int, version: str | None = None, signer: str = "OsVendor") -> Binary:
    return Binary(path, version, None, None, None, size, signer, "Valid")


S32 = "C:\\Windows\\System32\\"
WINDOWS: dict[str, Binary] = {
    "smss": _w(S32 + "smss.exe", "Windows Session Manager", 186_368),
    "wininit": _w(S32 + "wininit.exe", "Windows Start-Up Application", 440_320),
    "winlogon": _w(S32 + "winlogon.exe", "Windows Logon Application", 904_192),
    "services": _w(S32 + "services.exe", "Services and Controller app", 727_872),
    "lsass": _w(S32 + "lsass.exe", "Local Security Authority Process", 84_688),
    "svchost": _w(S32 + "svchost.exe", "Host Process for Windows Services", 57_360),
    "userinit": _w(S32 + "userinit.exe", "Userinit Logon Application", 38_912),
    "explorer": _w("C:\\Windows\\explorer.exe", "Windows Explorer", 5_566_640),
    "cmd": _w(S32 + "cmd.exe", "Windows Command Processor", 323_584),
    "powershell": _w(S32 + "WindowsPowerShell\\v1.0\\powershell.exe", "Windows PowerShell", 450_560),
    "conhost": _w(S32 + "conhost.exe", "Console Window Host", 1_011_712),
    "whoami": _w(S32 + "whoami.exe", "whoami - displays logged on user information", 71_168),
    "ipconfig": _w(S32 + "ipconfig.exe", "IP Configuration Utility", 36_352),
    "net": _w(S32 + "net.exe", "Net Command", 59_904),
    "ping": _w(S32 + "PING.EXE", "TCP/IP Ping Command", 22_528),
    "tasklist": _w(S32 + "tasklist.exe", "Lists the current running tasks.", 97_280),
    "taskhostw": _w(S32 + "taskhostw.exe", "Host Process for Windows Tasks", 101_888),
    "wmiprvse": _w(S32 + "wbem\\WmiPrvSE.exe", "WMI Provider Host", 552_960),
    "searchprot": _w(S32 + "SearchProtocolHost.exe", "Microsoft Windows Search Protocol Host", 417_792),
    "rundll32": _w(S32 + "rundll32.exe", "Windows host process (Rundll32)", 71_680),
    "reg": _w(S32 + "reg.exe", "Registry Console Tool", 78_848),
    "schtasks": _w(S32 + "schtasks.exe", "Task Scheduler Configuration Tool", 235_520),
    "msmpeng": _w("C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24050.7-0\\MsMpEng.exe",
                  "Antimalware Service Executable", 133_576, product="Microsoft® Windows® Operating System",
                  version="4.18.24050.7", signer="Microsoft"),
    "mpcmdrun": _w("C:\\ProgramData\\Microsoft\\Windows Defender\\Platform\\4.18.24050.7-0\\MpCmdRun.exe",
                   "Microsoft Malware Protection Command Line Utility", 1_558_584, version="4.18.24050.7",
                   signer="Microsoft"),
    "sense": _w("C:\\Program Files\\Windows Defender Advanced Threat Protection\\MsSense.exe",
                "Windows Defender Advanced Threat Protection Service Executable", 4_987_936,
                version="10.8760.22621.3527", signer="Microsoft"),
    "chrome": _w("C:\\Program Files\\Google\\Chrome\\Application\\chrome.exe", "Google Chrome", 3_234_072,
                 company="Google LLC", product="Google Chrome", version="126.0.6478.127", signer="ThirdParty"),
    "msedge": _w("C:\\Program Files (x86)\\Microsoft\\Edge\\Application\\msedge.exe", "Microsoft Edge",
                 4_155_960, product="Microsoft Edge", version="126.0.2592.87", signer="Microsoft"),
    "outlook": _w("C:\\Program Files\\Microsoft Office\\root\\Office16\\OUTLOOK.EXE", "Microsoft Outlook",
                  43_516_744, product="Microsoft Outlook", version="16.0.17628.20144", signer="Microsoft"),
    "winword": _w("C:\\Program Files\\Microsoft Office\\root\\Office16\\WINWORD.EXE", "Microsoft Word",
                  1_637_192, product="Microsoft Office", version="16.0.17628.20144", signer="Microsoft"),
    "excel": _w("C:\\Program Files\\Microsoft Office\\root\\Office16\\EXCEL.EXE", "Microsoft Excel",
                68_417_352, product="Microsoft Office", version="16.0.17628.20144", signer="Microsoft"),
    "teams": _w("C:\\Program Files\\WindowsApps\\MSTeams_24152.412.2958.916_x64__8wekyb3d8bbwe\\ms-teams.exe",
                "Microsoft Teams", 9_052_488, product="Microsoft Teams", version="24152.412.2958.916",
                signer="Microsoft"),
    "onedrive": _w("C:\\Program Files\\Microsoft OneDrive\\OneDrive.exe", "Microsoft OneDrive", 3_714_960,
                   product="Microsoft OneDrive", version="24.116.0609.0003", signer="Microsoft"),
    "notepad": _w(S32 + "notepad.exe", "Notepad", 360_448),
    "code": _w("C:\\Users\\{user}\\AppData\\Local\\Programs\\Microsoft VS Code\\Code.exe", "Visual Studio Code",
               158_429_632, product="Visual Studio Code", version="1.90.2", signer="Microsoft"),
    "git": _w("C:\\Program Files\\Git\\cmd\\git.exe", "Git for Windows", 45_000, company="The Git Development Community",
              product="Git", version="2.45.2.1", signer="ThirdParty"),
}

WIN_DLLS: list[Binary] = [
    _w(S32 + "ntdll.dll", "NT Layer DLL", 2_169_272),
    _w(S32 + "kernel32.dll", "Windows NT BASE API Client DLL", 774_392),
    _w(S32 + "KernelBase.dll", "Windows NT BASE API Client DLL", 3_856_504),
    _w(S32 + "user32.dll", "Multi-User Windows USER API Client DLL", 1_827_208),
    _w(S32 + "advapi32.dll", "Advanced Windows 32 Base API", 717_336),
    _w(S32 + "ws2_32.dll", "Windows Socket 2.0 32-Bit DLL", 472_984),
    _w(S32 + "crypt32.dll", "Crypto API32", 1_432_416),
    _w(S32 + "wininet.dll", "Internet Extensions for Win32", 5_037_568),
    _w(S32 + "amsi.dll", "Anti-Malware Scan Interface", 99_840),
    _w(S32 + "clrjit.dll", ".NET Runtime Just-In-Time Compiler", 1_562_000),
    _w("C:\\Windows\\Microsoft.NET\\Framework64\\v4.0.30319\\clr.dll", "Microsoft .NET Runtime Common Language Runtime",
       10_531_736, product="Microsoft® .NET Framework", version="4.8.9232.0"),
    _w("C:\\Windows\\assembly\\NativeImages_v4.0.30319_64\\System.Management.Automation.ni.dll",
       "System.Management.Automation", 34_118_144, product="Microsoft® .NET Framework", version="10.0.22621.1"),
]

MAC: dict[str, Binary] = {
    "launchd": _u("/sbin/launchd", 328_432, "14.5"),
    "loginwindow": _u("/System/Library/CoreServices/loginwindow.app/Contents/MacOS/loginwindow", 1_794_928, "14.5"),
    "finder": _u("/System/Library/CoreServices/Finder.app/Contents/MacOS/Finder", 5_331_200, "14.5"),
    "terminal": _u("/System/Applications/Utilities/Terminal.app/Contents/MacOS/Terminal", 1_239_888, "2.14"),
    "zsh": _u("/bin/zsh", 1_381_808, "5.9"),
    "bash": _u("/bin/bash", 1_310_224, "3.2.57"),
    "cp": _u("/bin/cp", 152_560, "14.5"),
    "ls": _u("/bin/ls", 187_040, "14.5"),
    "cat": _u("/bin/cat", 118_944, "14.5"),
    "git": _u("/usr/bin/git", 167_120, "2.39.3"),
    "curl": _u("/usr/bin/curl", 192_352, "8.6.0"),
    "ssh": _u("/usr/bin/ssh", 1_497_232, "9.7p1"),
    "python3": _u("/usr/bin/python3", 167_120, "3.9.6"),
    "vim": _u("/usr/bin/vim", 5_211_792, "9.0"),
    "brew": _u("/opt/homebrew/bin/brew", 5_874, "4.3.8", signer="Unknown"),
    "mdworker": _u("/System/Library/Frameworks/CoreServices.framework/Frameworks/Metadata.framework/Versions/A/Support/mdworker_shared", 280_880, "14.5"),
    "softwareupdated": _u("/System/Library/PrivateFrameworks/SoftwareUpdate.framework/Resources/softwareupdated", 2_410_256, "14.5"),
    "wdavdaemon": _u("/Library/Application Support/Microsoft/Defender/wdavdaemon_enterprise.app/Contents/MacOS/wdavdaemon_enterprise",
                     6_712_416, "101.24052.0004", signer="ThirdParty"),
    "chrome": _u("/Applications/Google Chrome.app/Contents/MacOS/Google Chrome", 258_960, "126.0.6478.127", signer="ThirdParty"),
    "safari": _u("/Applications/Safari.app/Contents/MacOS/Safari", 1_021_600, "17.5"),
    "outlook": _u("/Applications/Microsoft Outlook.app/Contents/MacOS/Microsoft Outlook", 112_003_776, "16.86", signer="ThirdParty"),
    "slack": _u("/Applications/Slack.app/Contents/MacOS/Slack", 172_432, "4.38.125", signer="ThirdParty"),
    "diskarbitrationd": _u("/usr/libexec/diskarbitrationd", 499_776, "14.5"),
}

LINUX: dict[str, Binary] = {
    "systemd": _u("/usr/lib/systemd/systemd", 96_192, "249.11"),
    "sshd": _u("/usr/sbin/sshd", 921_480, "8.9p1"),
    "bash": _u("/usr/bin/bash", 1_396_520, "5.1.16"),
    "sh": _u("/usr/bin/dash", 125_688, "0.5.11"),
    "cron": _u("/usr/sbin/cron", 55_944, "3.0pl1"),
    "sudo": _u("/usr/bin/sudo", 232_416, "1.9.9"),
    "ls": _u("/usr/bin/ls", 138_208, "8.32"),
    "ps": _u("/usr/bin/ps", 137_688, "3.3.17"),
    "cat": _u("/usr/bin/cat", 35_280, "8.32"),
    "curl": _u("/usr/bin/curl", 260_328, "7.81.0"),
    "apt": _u("/usr/bin/apt", 18_824, "2.4.12"),
    "python3": _u("/usr/bin/python3.10", 5_904_904, "3.10.12"),
    "docker": _u("/usr/bin/docker", 33_796_856, "26.1.4"),
    "dockerd": _u("/usr/bin/dockerd", 98_304_000, "26.1.4"),
    "systemctl": _u("/usr/bin/systemctl", 890_664, "249.11"),
    "journalctl": _u("/usr/bin/journalctl", 80_400, "249.11"),
    "nginx": _u("/usr/sbin/nginx", 1_190_344, "1.18.0"),
    "logrotate": _u("/usr/sbin/logrotate", 96_152, "3.19.0"),
    "runparts": _u("/usr/bin/run-parts", 27_008, "5.7"),
    "wdavdaemon": _u("/opt/microsoft/mdatp/sbin/wdavdaemon", 8_712_512, "101.24052.0002", signer="ThirdParty"),
    "tar": _u("/usr/bin/tar", 450_344, "1.34"),
    "vim": _u("/usr/bin/vim.basic", 3_751_512, "8.2"),
}

# (RemoteUrl, RemoteIP, RemotePort) per kind of traffic. IPs are fixed so joins on them work.
WEB: list[tuple[str, str, int]] = [
    ("www.google.com", "142.250.74.36", 443),
    ("clients2.google.com", "142.250.74.46", 443),
    ("github.com", "140.82.121.4", 443),
    ("api.github.com", "140.82.121.6", 443),
    ("login.microsoftonline.com", "20.190.160.20", 443),
    ("outlook.office365.com", "52.97.146.162", 443),
    ("teams.microsoft.com", "52.113.194.132", 443),
    ("corp-my.sharepoint.com", "13.107.136.10", 443),
    ("slack.com", "3.68.124.168", 443),
    ("www.wikipedia.org", "185.15.59.224", 443),
    ("pypi.org", "151.101.0.223", 443),
    ("files.pythonhosted.org", "151.101.1.63", 443),
]
UPDATE: list[tuple[str, str, int]] = [
    ("winatp-gw-neu.microsoft.com", "20.54.24.148", 443),
    ("go.microsoft.com", "23.36.94.83", 443),
    ("archive.ubuntu.com", "91.189.91.83", 80),
    ("security.ubuntu.com", "185.125.190.36", 80),
    ("swscan.apple.com", "17.253.53.207", 443),
    ("download.docker.com", "18.165.83.71", 443),
]
SUSPICIOUS: tuple[str, str, int] = ("cdn-update.example-files.net", "185.220.101.47", 443)
ATTACKER_IPS = ["45.95.147.231", "193.32.162.59", "218.92.0.118", "61.177.172.140"]

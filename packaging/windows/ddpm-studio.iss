; Inno Setup 6 script: a Windows installer for the bundle that packaging/build makes in
; dist\ddpm-studio (run packaging/build in Git Bash, or the package.yml workflow, first).
;
;   iscc /DAppVersion=0.1.0 packaging\windows\ddpm-studio.iss
;
; Writes dist\ddpm-studio-<version>-windows-x64-setup.exe. Installs per machine into Program Files
; by default, or per user (no administrator rights) when chosen in the first dialog or with
; /CURRENTUSER. Start-menu entry, optional desktop icon, uninstaller in Apps & features.
; Runs and settings live in the user's AppData (platformdirs / QSettings), never in {app}, so the
; uninstaller removes everything it installed and leaves the user's runs alone.
; NOT TESTED on Windows by the author of this file: it is built and smoke-tested by
; .github/workflows/package.yml on a windows runner.

#define AppName "DDPM Studio"
#ifndef AppVersion
  #define AppVersion "0.1.0"
#endif
#define Bundle "..\..\dist\ddpm-studio"

[Setup]
; A fixed AppId: upgrades replace the installed version instead of installing beside it.
AppId={{6B1E0D3A-5F3C-4E8B-9C47-2D1A7E5B9F10}
AppName={#AppName}
AppVersion={#AppVersion}
AppVerName={#AppName} {#AppVersion}
AppPublisher=DDPM Studio developers
DefaultDirName={autopf}\{#AppName}
DefaultGroupName={#AppName}
DisableProgramGroupPage=yes
PrivilegesRequired=admin
PrivilegesRequiredOverridesAllowed=dialog commandline
ArchitecturesAllowed=x64compatible
ArchitecturesInstallIn64BitMode=x64compatible
OutputDir=..\..\dist
OutputBaseFilename=ddpm-studio-{#AppVersion}-windows-x64-setup
SetupIconFile=..\..\resources\icons\ddpm-studio.ico
UninstallDisplayIcon={app}\ddpm-studio.exe
UninstallDisplayName={#AppName}
WizardStyle=modern
; The bundle holds large, already compressed libraries (torch, Qt): lzma2 without solid
; compression keeps the build time and the memory use reasonable for a multi-GB input.
Compression=lzma2/normal
SolidCompression=no
LZMANumBlockThreads=4
; A CUDA build of torch makes a bundle of several GB; Setup.exe cannot exceed 4 GB in one file.
DiskSpanning=no

[Languages]
Name: "english"; MessagesFile: "compiler:Default.isl"

[Tasks]
Name: "desktopicon"; Description: "{cm:CreateDesktopIcon}"; GroupDescription: "{cm:AdditionalIcons}"; Flags: unchecked

[Files]
Source: "{#Bundle}\*"; DestDir: "{app}"; Flags: ignoreversion recursesubdirs createallsubdirs

[Icons]
Name: "{autoprograms}\{#AppName}"; Filename: "{app}\ddpm-studio.exe"; WorkingDir: "{userdocs}"
Name: "{autodesktop}\{#AppName}"; Filename: "{app}\ddpm-studio.exe"; WorkingDir: "{userdocs}"; Tasks: desktopicon

[Run]
Filename: "{app}\ddpm-studio.exe"; Description: "{cm:LaunchProgram,{#AppName}}"; Flags: nowait postinstall skipifsilent

[UninstallDelete]
; Only byte-code caches could appear under {app} (the app is built not to write them).
Type: filesandordirs; Name: "{app}\_internal\__pycache__"

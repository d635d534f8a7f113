# A minimal ml-defender appliance (docs/nixos.md): the module on, two interfaces (the
# uplink and the LAN), nothing else listening, the serial console only.
{ lib, ... }:

{
  services.mldefender = {
    enable = true;
    settings = {
      capture.interfaces = [
        { name = "eth0"; role = "wan"; }
        { name = "eth1"; role = "lan"; }
      ];
      log.node = "appliance";
    };
  };

  # Nothing answers on the network but what ml-defender forwards: no sshd unless asked.
  services.openssh.enable = lib.mkDefault false;
  # The serial console only.
  boot.kernelParams = [ "console=ttyS0,115200" ];
  systemd.services."getty@tty1".enable = false;
  systemd.services."autovt@".enable = false;
  documentation.enable = false;

  boot.loader.systemd-boot.enable = true;
  boot.loader.efi.canTouchEfiVariables = false;
  fileSystems."/" = { device = "/dev/disk/by-label/nixos"; fsType = "ext4"; };
  system.stateVersion = "25.05";
}

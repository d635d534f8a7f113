# The flake's VM check (needs a machine with the Nix binary cache; docs/nixos.md): the
# appliance boots, the supervisor says ready, and `mldefender status` answers.
{ self }:

{
  name = "mldefender-appliance";
  nodes.gateway = { ... }: {
    imports = [ self.nixosModules.default ../appliance.nix ];
    services.mldefender.package = self.packages.x86_64-linux.default;
    virtualisation.vlans = [ 1 2 ];
  };
  testScript = ''
    gateway.wait_for_unit("mldefender.service")
    gateway.succeed("mldefender status --config /etc/mldefender/mldefender.toml")
    gateway.succeed("systemctl reload mldefender.service")
    gateway.wait_for_unit("mldefender.service")
  '';
}

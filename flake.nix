# ml-defender as a flake (docs/nixos.md). On these development machines the flake can
# be parsed and its module evaluated (appliance/cli/tests/nixos.rs), not built: no
# binary cache is reachable and nixpkgs cannot be fetched. On a machine with Nix:
#   nix build .#default                                   # the mldefender binary
#   nixos-rebuild build --flake .#appliance               # the appliance system
#   nix flake check                                       # the VM test: boots, waits for ready
{
  description = "ml-defender: a network-security gateway appliance (XDP, bidirectional flows, ONNX models, a signed log)";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs = { self, nixpkgs }:
    let
      system = "x86_64-linux";
      pkgs = nixpkgs.legacyPackages.${system};
    in
    {
      packages.${system}.default = pkgs.callPackage ./nixos/package.nix { };

      nixosModules.default = ./nixos/module.nix;

      nixosConfigurations.appliance = nixpkgs.lib.nixosSystem {
        inherit system;
        modules = [
          self.nixosModules.default
          ./nixos/appliance.nix
          { services.mldefender.package = self.packages.${system}.default; }
        ];
      };

      checks.${system}.vm = pkgs.testers.runNixOSTest (import ./nixos/tests/vm.nix { inherit self; });
    };
}

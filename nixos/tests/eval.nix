# Evaluates nixos/module.nix without nixpkgs (docs/nixos.md, "What is checked here"):
# `lib` is the vendored nixpkgs lib; the NixOS options the modules set (systemd.services,
# users, environment.etc, and appliance.nix's) are taken free-form, and
# `pkgs` offers only what the module uses (`formats.toml` renders JSON text here, which
# `mldefender config check --json` reads back).
#
#   nix-instantiate --eval --strict --json nixos/tests/eval.nix --arg lib 'import LIB' \
#     --arg settings '{ response.ttl-scan-secs = 90; }' -A settings
{ lib, settings ? { }, appliance ? false }:

let
  # The NixOS options the modules set, declared free-form (their types are NixOS's).
  stub = lib.mkOption { type = lib.types.attrsOf lib.types.anything; default = { }; };
  stubs = {
    options = {
      systemd.services = stub;
      users.users = stub;
      users.groups = stub;
      environment.etc = stub;
      services.openssh = stub;
      boot = stub;
      documentation = stub;
      fileSystems = stub;
      system = stub;
    };
  };
  pkgs = {
    coreutils = "/nix/store/00000000000000000000000000000000-coreutils";
    formats.toml = _: {
      type = lib.types.anything;
      # JSON text, not a store path: evaluation writes nothing to the store.
      generate = _name: value: builtins.toJSON value;
    };
  };
  package = { type = "derivation"; name = "mldefender"; outPath = "/nix/store/00000000000000000000000000000000-mldefender"; };
  evaluated = lib.evalModules {
    specialArgs = { inherit pkgs; };
    modules = [
      stubs
      ../module.nix
      { services.mldefender = { enable = true; inherit package settings; }; }
    ] ++ lib.optional appliance ../appliance.nix;
  };
  service = evaluated.config.services.mldefender;
in
{
  inherit (service) settings;
  unit = evaluated.config.systemd.services.mldefender;
  users = builtins.attrNames evaluated.config.users.users;
  inherit (evaluated.config) boot system;
  # What the module writes to /etc/mldefender/mldefender.toml, as JSON here.
  rendered = evaluated.config.environment.etc."mldefender/mldefender.toml".source;
}

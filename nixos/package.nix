# The mldefender binary (the workspace's release build). The XDP program is compiled by
# the capture crate's build script with clang; FAISS is built from source by the index
# crate (cmake, OpenBLAS); etcd-client runs protoc. ONNX Runtime is loaded at run time
# from detect.onnxruntime (1.31.x), which the module points at this package's copy.
{ lib, rustPlatform, clang, llvm, pkg-config, cmake, protobuf, libbpf, openblas, onnxruntime, elfutils, zlib }:

rustPlatform.buildRustPackage {
  pname = "mldefender";
  version = (builtins.fromTOML (builtins.readFile ../Cargo.toml)).workspace.package.version;
  src = lib.cleanSource ../.;
  cargoLock.lockFile = ../Cargo.lock;
  cargoBuildFlags = [ "--package" "mld-cli" ];
  nativeBuildInputs = [ clang llvm pkg-config cmake protobuf ];
  buildInputs = [ libbpf openblas elfutils zlib ];
  # The tests need root, network namespaces and XDP (scripts/test runs them).
  doCheck = false;
  # The signed models (their signatures checked at load against detect.model-public-key).
  postInstall = ''
    mkdir -p $out/share/mldefender/models
    cp models/*.onnx models/*.json models/*.sig $out/share/mldefender/models/
  '';
  passthru = { inherit onnxruntime; };
  meta = {
    description = "Network-security gateway: XDP enforcement, flow features, ONNX detection, an HMAC-chained log";
    mainProgram = "mldefender";
    platforms = [ "x86_64-linux" ];
  };
}

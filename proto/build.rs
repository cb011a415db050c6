//! Compiles every `.proto` under `protos/` with protox (pure Rust, no protoc) and generates
//! the prost messages plus tonic clients and servers for them.

use std::path::{Path, PathBuf};

use prost::Message;

fn collect(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            collect(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from("protos");
    let mut files = Vec::new();
    collect(&root, &mut files)?;
    files.sort();
    let rel: Vec<PathBuf> = files
        .iter()
        .map(|p| p.strip_prefix(&root).map(Path::to_path_buf))
        .collect::<Result<_, _>>()?;

    let fds = protox::compile(&rel, [&root])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("descriptors.bin"), fds.encode_to_vec())?;

    let mut config = prost_build::Config::new();
    config.enable_type_names();
    config.btree_map(["."]);
    // A layer's bytes go to the ingest file and to the unpacking of layers written ahead
    // (berth-core's staged.rs): a shared buffer, not a copy for each.
    config.bytes([".containerd.services.content.v1.WriteContentRequest.data"]);
    tonic_prost_build::configure()
        .build_server(true)
        .build_client(true)
        .include_file("_includes.rs")
        .compile_fds_with_config(fds, config)?;

    println!("cargo:rerun-if-changed=protos");
    for f in &files {
        println!("cargo:rerun-if-changed={}", f.display());
    }
    Ok(())
}

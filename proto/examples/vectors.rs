//! Writes the conformance vectors (`altocast_proto::conformance`) as one JSON
//! file per group: `cargo run -p altocast-proto --example vectors -- --out proto/vectors`.

use std::{path::PathBuf, process::ExitCode};

use altocast_proto::conformance::Group;

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let out = match (args.next().as_deref(), args.next(), args.next()) {
        (Some("--out"), Some(dir), None) => PathBuf::from(dir),
        _ => return fail("usage: vectors --out DIR".into()),
    };
    for g in Group::ALL {
        let path = out.join(g.file_name());
        let written = g.render().map_err(|e| e.to_string()).and_then(|text| {
            std::fs::create_dir_all(&out).and_then(|()| std::fs::write(&path, text)).map_err(|e| e.to_string())
        });
        if let Err(e) = written {
            return fail(format!("{}: {e}", path.display()));
        }
        println!("wrote {}", path.display());
    }
    ExitCode::SUCCESS
}

fn fail(reason: String) -> ExitCode {
    eprintln!("vectors: {reason}");
    ExitCode::from(1)
}

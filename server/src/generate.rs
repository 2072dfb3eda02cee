//! `altocast-server gen` (module `generate`: `gen` is a reserved word): turns a topology (the `shared/data/topologies` JSON
//! schema, or a synthetic backbone) into RFC 7285 maps and a deterministic
//! sequence of change events that the origin can publish.
//!
//! Output in `--out DIR`: `default-network-map.json` and `default-cost-map.json`
//! (publish them with `--maps-dir DIR`), `events.jsonl` (one line per event),
//! and `steps/NNNN/` with the full maps after each event (copy a step's files
//! into the maps directory to publish it).

use std::path::{Path, PathBuf};

use crate::workload::{Topology, Workload};
use altocast_proto::model::json;
use anyhow::Context as _;
use clap::Args;

/// `gen` options.
#[derive(Debug, Clone, Args)]
pub struct GenArgs {
    /// Topology JSON file (e.g. ../shared/data/topologies/kdl.json). Default: synthetic.
    #[arg(long)]
    pub topology: Option<PathBuf>,
    /// PoPs of the synthetic backbone (without --topology).
    #[arg(long, default_value_t = 100)]
    pub nodes: usize,
    /// Output directory.
    #[arg(long)]
    pub out: PathBuf,
    /// Change events to generate.
    #[arg(long, default_value_t = 10)]
    pub events: usize,
    /// Seed (same seed, same output).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
}

/// Loads `--topology` or builds a synthetic backbone.
pub fn workload(topology: Option<&Path>, nodes: usize, seed: u64) -> anyhow::Result<Workload> {
    let topo = match topology {
        Some(p) => {
            let body = std::fs::read(p).with_context(|| format!("reading topology {}", p.display()))?;
            Topology::from_json(&body).with_context(|| format!("topology {}", p.display()))?
        }
        None => {
            if !(2..=4096).contains(&nodes) {
                anyhow::bail!("--nodes must be between 2 and 4096");
            }
            Topology::synthetic(nodes, seed)
        }
    };
    Ok(Workload::new(topo, seed))
}

/// The current maps of `w` as RFC 7285 JSON bodies.
pub fn bodies(w: &Workload) -> (String, String) {
    let nm = w.network_map();
    (json::network_map_json(&w.network_map_id, &nm), json::cost_map_json(&w.cost_map(&nm)))
}

/// Writes the maps and events.
pub fn run(args: &GenArgs) -> anyhow::Result<()> {
    let mut w = workload(args.topology.as_deref(), args.nodes, args.seed)?;
    std::fs::create_dir_all(&args.out).with_context(|| format!("creating {}", args.out.display()))?;
    let write = |dir: &Path, (nm, cm): (String, String)| -> anyhow::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("default-network-map.json"), nm)?;
        std::fs::write(dir.join("default-cost-map.json"), cm)?;
        Ok(())
    };
    write(&args.out, bodies(&w))?;
    let mut events = String::new();
    for i in 1..=args.events {
        let e = w.step();
        let step = args.out.join("steps").join(format!("{i:04}"));
        write(&step, bodies(&w))?;
        events.push_str(
            &serde_json::json!({"seq": e.seq, "type": e.kind.as_str(), "detail": e.detail, "maps": format!("steps/{i:04}")})
                .to_string(),
        );
        events.push('\n');
    }
    std::fs::write(args.out.join("events.jsonl"), events)?;
    println!(
        "{}: {} PIDs, {} links; wrote {} and {} events",
        w.topology().name,
        w.pid_count(),
        w.link_count(),
        args.out.display(),
        args.events
    );
    Ok(())
}

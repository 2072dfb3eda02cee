//! Late joiners through a real two-level RProxy tree on loopback
//! (origin → RProxy → RProxy, gRPC over TCP): after each kind of change — a
//! cost change, a prefix move, a PID added (cost maps re-bound by the origin),
//! a PID removed with its cost maps, a new resource — a newcomer holding
//! nothing joins every node and commits every resource from the catch-up
//! alone, at every moment until the tree has converged. Once with the RProxies'
//! cached snapshots older than the TTL (the original finding) and small
//! rings, once with the default TTL and ring.

use std::time::Duration;

use altocast_tests::{
    OriginOptions, TestOrigin, TestRproxy,
    join::join,
    model::{Model, step_request},
};

#[derive(Debug, Clone, Copy)]
enum Change {
    Cost,
    MovePrefix,
    AddPid,
    RemovePid,
    NewResource,
}

/// The resources and bodies of one step that makes `change`.
fn step(m: &mut Model, cost_maps: &mut Vec<String>, change: Change, n: u8) -> Vec<(String, String)> {
    match change {
        Change::Cost => {
            let (a, b) = (m.pick(n), m.pick(n / 3 + 1));
            m.costs.get_mut("cm").expect("cm").insert((a, b), 1.0 + n as f64);
            vec![("cm".into(), m.cost_map_json("cm", &m.network_map()))]
        }
        Change::MovePrefix => {
            let from = m.pids.iter().find(|(_, p)| p.len() > 1).map(|(k, _)| k.clone()).expect("a PID to move from");
            let to = m.pids.keys().find(|k| **k != from).expect("another PID").clone();
            assert!(m.move_prefix(&from, &to));
            m.network_map_step()
        }
        Change::AddPid => {
            m.add_pid();
            m.network_map_step()
        }
        Change::RemovePid => {
            let gone = m.pick(n);
            m.pids.remove(&gone);
            m.full_step(cost_maps)
        }
        Change::NewResource => {
            let id = format!("cm{}", cost_maps.len() + 1);
            m.costs.insert(id.clone(), Default::default());
            cost_maps.push(id.clone());
            vec![(id.clone(), m.cost_map_json(&id, &m.network_map()))]
        }
    }
}

async fn publish(o: &TestOrigin, step: Vec<(String, String)>) {
    o.publish_request(step_request(&step), Some(altocast_tests::TOKEN)).await.expect("publish");
}

async fn late_joiners(opts: OriginOptions, age: Duration, ring: &[String]) {
    let o = TestOrigin::start_with(opts, None).await;
    let mut m = Model::new();
    let mut cost_maps = vec!["cm".to_owned()];
    publish(&o, step(&mut m, &mut cost_maps, Change::RemovePid, 0)).await;
    let r1 = TestRproxy::start_with_args(&[&o.url], &o.pub_key_path, None, ring).await;
    let r2 = TestRproxy::start_with_args(&[&r1.url], &o.pub_key_path, None, ring).await;
    let keys = o.trusted();
    let nodes = [("the origin", o.url.clone()), ("RProxy 1", r1.url.clone()), ("RProxy 2", r2.url.clone())];
    let converge = |label: String| {
        let keys = keys.clone();
        let nodes = nodes.clone();
        async move {
            let mut joins = 0;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
            loop {
                let mut ends = Vec::new();
                for (name, url) in &nodes {
                    joins += 1;
                    let j = join(url, &keys, Duration::from_secs(5), Duration::from_millis(100))
                        .await
                        .unwrap_or_else(|e| panic!("{label}: a newcomer at {name}: {e}"));
                    ends.push(j.at);
                }
                if ends.iter().all(|e| *e == ends[0]) {
                    return joins;
                }
                assert!(tokio::time::Instant::now() < deadline, "{label}: the tree did not converge: {ends:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    converge("start".into()).await;
    // The RProxies' cached snapshots grow older than `age` (the TTL, in the
    // first run): only heartbeats keep them fresh now.
    tokio::time::sleep(age).await;
    let changes = [
        Change::Cost,
        Change::MovePrefix,
        Change::AddPid,
        Change::RemovePid,
        Change::NewResource,
        Change::MovePrefix,
        Change::AddPid,
        Change::Cost,
        Change::AddPid,
        Change::RemovePid,
        Change::MovePrefix,
        Change::Cost,
    ];
    let mut joins = 0;
    for (i, c) in changes.into_iter().enumerate() {
        publish(&o, step(&mut m, &mut cost_maps, c, i as u8)).await;
        joins += converge(format!("after change {i} ({c:?})")).await;
    }
    eprintln!("late joiners: {} changes, {joins} newcomer joins, all committed", changes.len());
    r2.stop().await;
    r1.stop().await;
    o.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomers_at_every_level_commit_after_each_kind_of_change_with_caches_older_than_the_ttl() {
    let opts = OriginOptions { ttl_secs: 2, heartbeat_secs: 1, ..Default::default() };
    late_joiners(opts, Duration::from_millis(2_500), &["--ring-size".into(), "3".into()]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn newcomers_at_every_level_commit_after_each_kind_of_change_with_default_settings() {
    late_joiners(OriginOptions::default(), Duration::ZERO, &[]).await;
}

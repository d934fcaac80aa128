//! What images.policy's signature check adds to a warm pull (not a test):
//! PullImage of an image whose layers are all present, median of RUNS,
//! with no policy and with a signed_by scope over it (its signature
//! manifest and payload fetched and verified on every pull).
//!
//! Run: hack/bench.sh verify

use std::time::{Duration, Instant};

use crust_e2e::cosign::{copy_image, key, registry, sign};
use crust_e2e::{Crustd, CrustdOptions};

const RUNS: usize = 21;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

async fn warm_pulls(crustd: &Crustd, image: &str) -> Duration {
    let mut c = crustd.client().await;
    c.pull(image).await.expect("first pull");
    let mut times = Vec::new();
    for _ in 0..RUNS {
        let start = Instant::now();
        c.pull(image).await.expect("pull");
        times.push(start.elapsed());
    }
    median(times)
}

#[tokio::main]
async fn main() {
    let keys = tempfile::tempdir().unwrap();
    let team = key(keys.path(), "team");
    let reg = registry();
    let run = format!(
        "{:x}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    let repo = format!("bench-{run}/signed");
    let digest = copy_image(&repo, "v1", "bench");
    sign(&repo, &digest, &team, false);
    let image = format!("{reg}/{repo}:v1");

    let plain = Crustd::start().await;
    let without = warm_pulls(&plain, &image).await;
    drop(plain);
    let policed = Crustd::start_with(CrustdOptions {
        extra_config: format!(
            "images:\n  policy:\n    scopes:\n      - {{scope: '{reg}/bench-{run}', rule: signed_by, keys: [{}]}}\n",
            team.public.display()
        ),
        ..Default::default()
    })
    .await;
    let with = warm_pulls(&policed, &image).await;
    assert!(policed.log().contains("signature verified"));
    println!(
        "warm PullImage, median of {RUNS}: no policy {:.2} ms, signed_by {:.2} ms, verification adds {:.2} ms",
        without.as_secs_f64() * 1e3,
        with.as_secs_f64() * 1e3,
        (with.as_secs_f64() - without.as_secs_f64()) * 1e3
    );
}

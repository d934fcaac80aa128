//! Cold-pull benchmark (not a test): times PullImage of multi-layer images
//! from the local test registry into a fresh crustd, and, as the floor to
//! compare with, a plain sequential download of the same blobs.
//!
//! Run: hack/bench.sh pull   (or: cargo bench -p crust-e2e --bench pull)

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use crust_e2e::{Crustd, image_ref, test_images};

const RUNS: usize = 5;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Downloads every blob of `name` over plain HTTP, one after another.
fn raw_download(name: &str) -> (Duration, u64) {
    let images = test_images();
    let registry = images["registry"].as_str().unwrap();
    let image = &images["images"][name];
    let repo = name.split(':').next().unwrap();
    let start = Instant::now();
    let mut bytes = 0;
    for layer in image["layers"].as_array().unwrap() {
        let digest = layer["digest"].as_str().unwrap();
        let mut stream = std::net::TcpStream::connect(registry).unwrap();
        write!(
            stream,
            "GET /v2/{repo}/blobs/{digest} HTTP/1.1\r\nHost: {registry}\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut sink = Vec::new();
        stream.read_to_end(&mut sink).unwrap();
        bytes += sink.len() as u64;
    }
    (start.elapsed(), bytes)
}

#[tokio::main]
async fn main() {
    for name in ["crust-test/multilayer:latest", "crust-test/big:latest"] {
        let mut pulls = Vec::new();
        for _ in 0..RUNS {
            // A fresh crustd each run: nothing cached, a cold pull.
            let crustd = Crustd::start().await;
            let mut c = crustd.client().await;
            let start = Instant::now();
            c.pull(&image_ref(name)).await.expect("pull");
            pulls.push(start.elapsed());
        }
        let downloads: Vec<Duration> = (0..RUNS).map(|_| raw_download(name).0).collect();
        let (_, bytes) = raw_download(name);
        let layers = test_images()["images"][name]["layers"]
            .as_array()
            .unwrap()
            .len();
        println!(
            "cold pull {name} ({layers} layers, {:.1} MiB): crust PullImage median {:.1} ms; raw sequential blob download median {:.1} ms ({RUNS} runs each)",
            bytes as f64 / (1 << 20) as f64,
            median(pulls).as_secs_f64() * 1000.0,
            median(downloads).as_secs_f64() * 1000.0,
        );
    }
}

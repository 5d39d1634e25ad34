//! Planning cost: `cargo bench -p shoal-core --bench plan`. Target: 10,000 clusters in
//! under 100 ms.

use std::collections::BTreeMap;

use shoal_core::plan::{Candidate, OrderKey, Strategy, WaveSize, WaveSpec, Weights, plan};

fn main() {
    divan::main();
}

fn fleet(n: usize) -> Vec<Candidate> {
    let envs = ["test", "staging", "canary", "prod"];
    let regions = ["cn-hangzhou", "cn-beijing", "cn-shanghai"];
    (0..n)
        .map(|i| Candidate {
            name: format!("c-{i:05}"),
            labels: BTreeMap::from([
                ("env".to_string(), envs[i % 4].to_string()),
                ("region".to_string(), regions[i % 3].to_string()),
                ("tier".to_string(), (1 + i % 5).to_string()),
            ]),
            nodes: 10 + (i as u32 * 37) % 990,
            failures: (i % 7 == 0) as u32,
        })
        .collect()
}

fn strategy() -> Strategy {
    Strategy {
        order: vec![
            OrderKey {
                label: "env".into(),
                values: ["test", "staging", "canary", "prod"]
                    .map(String::from)
                    .to_vec(),
            },
            OrderKey {
                label: "region".into(),
                values: ["cn-hangzhou", "cn-beijing", "cn-shanghai"]
                    .map(String::from)
                    .to_vec(),
            },
        ],
        waves: vec![
            WaveSpec {
                size: WaveSize::Count(1),
                approval: false,
            },
            WaveSpec {
                size: WaveSize::Percent(5),
                approval: true,
            },
            WaveSpec {
                size: WaveSize::Percent(20),
                approval: false,
            },
        ],
        wave_boundary: Some("env".into()),
        weights: Weights::default(),
    }
}

#[divan::bench(args = [1_000, 10_000])]
fn plan_fleet(bencher: divan::Bencher, n: usize) {
    let clusters = fleet(n);
    let s = strategy();
    bencher.bench(|| plan(divan::black_box(&clusters), &s).unwrap());
}

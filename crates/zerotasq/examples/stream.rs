//! The main job, end to end: stream 200,000 documents through 2 worker processes that each
//! "load a model" once, with a progress bar, in input order, and print a summary.
//!
//!     cargo run --release -p zerotasq --example stream
//!
//! Each worker process is this program re-executed: `serve_if_worker()` on the first line of
//! `main` turns such a child into a worker.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use zerotasq::{Pool, Worker};

const DOCUMENTS: u64 = 200_000;

#[derive(Clone, Serialize, Deserialize)]
struct ModelConfig {
    vocabulary: usize,
}

#[derive(Serialize, Deserialize)]
struct Document {
    id: u64,
    text: String,
}

#[derive(Serialize, Deserialize)]
struct Score {
    id: u64,
    words: usize,
    score: u64,
}

/// A stand-in for an ML model: heavy to load once, cheap per call.
struct Scorer {
    weights: Vec<u64>,
}

impl Worker for Scorer {
    type Config = ModelConfig;
    type Input = Document;
    type Output = Score;
    type Error = String;

    fn init(config: ModelConfig) -> Result<Self, String> {
        std::thread::sleep(Duration::from_millis(300)); // "loading the model"
        let weights = (0..config.vocabulary as u64)
            .map(|i| i.wrapping_mul(2654435761) % 97)
            .collect();
        Ok(Scorer { weights })
    }

    fn process(&mut self, doc: Document) -> Result<Score, String> {
        if doc.text.is_empty() {
            return Err(format!("document {} is empty", doc.id));
        }
        let mut score = 0u64;
        let mut words = 0;
        for word in doc.text.split_whitespace() {
            let h = word
                .bytes()
                .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
            score += self.weights[h % self.weights.len()];
            words += 1;
        }
        Ok(Score {
            id: doc.id,
            words,
            score,
        })
    }
}

fn main() -> Result<(), zerotasq::Error> {
    zerotasq::serve_if_worker();

    let started = Instant::now();
    let pool = Pool::<Scorer>::builder(ModelConfig { vocabulary: 50_000 })
        .processes(2)
        .build()?;
    // A lazy input: documents are made only as the window frees up.
    let documents = (0..DOCUMENTS).map(|id| Document {
        id,
        text: if id % 50_000 == 49_999 {
            String::new() // a bad record: its error arrives at its place, the rest goes on
        } else {
            format!(
                "document {id} talks about streams and workers and balance {}",
                id % 1000
            )
        },
    });

    let bar = ProgressBar::new(DOCUMENTS).with_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} docs  {per_sec}  eta {eta}")
            .expect("template"),
    );
    let (mut ok, mut failed, mut total_score, mut next_id) = (0u64, 0u64, 0u64, 0u64);
    for outcome in pool.map(documents)? {
        match outcome {
            Ok(score) => {
                assert_eq!(score.id, next_id, "results arrive in input order");
                total_score += score.score;
                ok += 1;
            }
            Err(e) => {
                bar.suspend(|| eprintln!("document {next_id}: {e}"));
                failed += 1;
            }
        }
        next_id += 1;
        bar.inc(1);
    }
    bar.finish();
    let stats = pool.stats();
    let wall = started.elapsed().as_secs_f64();
    println!(
        "{ok} scored, {failed} failed, total score {total_score}; {:.2} s wall ({:.0} docs/s), \
         {} workers, {} re-queued",
        wall,
        (ok + failed) as f64 / wall,
        stats.workers_alive,
        stats.requeued
    );
    Ok(())
}

//! Tasks and results over the message limit end as a clear error at their place, naming the
//! limit; the stream goes on and nothing hangs (a message over the sockets' limit would be
//! dropped with its connection).

mod common;

use std::time::Duration;

use common::within;
use zerotasq::{ErrorKind, Pool, Worker};

/// Answers a request of `n` with `n` bytes.
struct Sized;

impl Worker for Sized {
    type Config = ();
    type Input = Vec<u8>;
    type Output = Vec<u8>;
    type Error = String;

    fn init(_: ()) -> Result<Self, String> {
        Ok(Sized)
    }

    fn process(&mut self, input: Vec<u8>) -> Result<Vec<u8>, String> {
        let n = u32::from_le_bytes(input[..4].try_into().unwrap());
        Ok(vec![7; n as usize])
    }
}

fn ask(n: u32, padding: usize) -> Vec<u8> {
    let mut bytes = n.to_le_bytes().to_vec();
    bytes.resize(4 + padding, 0);
    bytes
}

#[test]
fn oversized_tasks_and_results_fail_at_their_place_and_the_rest_completes() {
    for (processes, threads) in [(2, 0), (0, 2)] {
        let pool = Pool::<Sized>::builder(())
            .processes(processes)
            .threads(threads)
            .max_message(1 << 20)
            .build()
            .unwrap();
        let asks = vec![
            ask(10, 0),
            ask(10, 2 << 20), // a task too big
            ask(3 << 20, 0),  // a result too big
            ask(10, 0),
        ];
        let out: Vec<_> = within(Duration::from_secs(60), move || {
            pool.map(asks).unwrap().collect()
        });
        assert_eq!(out.len(), 4);
        assert_eq!(out[0].as_ref().unwrap().len(), 10);
        assert_eq!(out[3].as_ref().unwrap().len(), 10);
        for (i, what) in [(1, "the task is"), (2, "the result is")] {
            let error = out[i].as_ref().unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Codec, "{error}");
            assert!(error.message().contains(what), "{error}");
            assert!(error.message().contains("over the limit of"), "{error}");
        }
    }
}

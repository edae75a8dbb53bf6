# The two entry points the README promises; both install what they need first.
.PHONY: demo test bench

demo:
	scripts/setup
	cargo run --release -p zerotasq --example stream

test:
	scripts/test

bench:
	scripts/setup
	cargo bench -p zerotasq --bench engine

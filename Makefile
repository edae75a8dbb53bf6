# The entry points the README promises; each installs what it needs first.
.PHONY: demo test bench wheel

demo:
	scripts/setup
	cargo run --release -p zerotasq --example stream

test:
	scripts/test

bench:
	scripts/setup
	cargo bench -p zerotasq --bench engine

# dist/zerotasq-VERSION-cp39-abi3-manylinux_2_28_x86_64.whl: the package and the command.
wheel:
	scripts/wheel

# linklease tasks. The README's two commands are plain cargo; these are shortcuts.

# Run the broker on the embedded SQLite default.
serve:
    cargo run --release -- serve

# The whole test suite (PostgreSQL tests run when LINKLEASE_TEST_POSTGRES_URL is set).
test:
    LINKLEASE_TEST_POSTGRES_URL=${LINKLEASE_TEST_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/test} cargo test --workspace

# What CI runs.
ci:
    bash .ci/run

# Flags pass through: `just bench --smoke`, `just bench --only ceiling,p1 --seconds 5`,
# `just bench --database-url postgres://postgres@127.0.0.1:5432/test`, `just bench --help`.
# The load harness (issue 6): release builds of the broker and the harness, then one run.
[positional-arguments]
bench *args:
    cargo build --release -p linklease-cli -p linklease-bench
    "${CARGO_TARGET_DIR:-target}/release/linklease-bench" "$@"

# Format and lint.
lint:
    cargo fmt --all
    cargo clippy --workspace --all-targets -- -D warnings

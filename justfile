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

# Format and lint.
lint:
    cargo fmt --all
    cargo clippy --workspace --all-targets -- -D warnings

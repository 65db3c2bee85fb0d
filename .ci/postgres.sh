# Sourced by .ci/run: installs and starts PostgreSQL, exports DEEPMIA_TEST_POSTGRES_URL. Filled in by the catalog work.
true

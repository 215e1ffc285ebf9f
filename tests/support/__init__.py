"""The test suite's one support layer: waiting (``wait_for``), secret-leak checks
(``assert_no_secrets``) and builders of the objects tests start from (``builders``). Fixtures
live in ``tests/fixtures``; directory helpers build on these instead of keeping their own."""

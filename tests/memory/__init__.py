import pytest

# index_model's asserts compare index answers with the model: rewrite them so a failure
# shows both sides, as in the test modules themselves.
pytest.register_assert_rewrite("tests.memory.index_model")

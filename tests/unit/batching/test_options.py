"""BatchingParameters text -> BatchingOptions: TF Serving's defaults, rules and messages."""

from types import SimpleNamespace

import pytest

from pyserving.batching.options import (
    SERVER_THREAD_POOL_NAME,
    BatchingConfigError,
    BatchingOptions,
    batching_config_from_server_options,
    parse_batching_parameters,
    read_batching_parameters_file,
    schedulable_cpus,
)
from pyserving.errors import Code, ServingError


def flags(**kw):
    base = dict(enable_batching=False, batching_parameters_file="",
                enable_per_model_batching_parameters=False)
    base.update(kw)
    return SimpleNamespace(**base)


def test_tf_servings_batching_config_parses_with_wrapper_syntax(testdata):
    opts = read_batching_parameters_file(str(testdata / "batching_config.txt"))
    assert opts.max_batch_size == 128
    assert opts.batch_timeout_micros == 0
    assert opts.max_enqueued_batches == 1000000
    assert opts.num_batch_threads == 8
    assert opts.thread_pool_name == "batch_threads"
    opts.validate()


def test_unset_fields_take_tf_serving_defaults():
    opts = parse_batching_parameters("")
    assert (opts.max_batch_size, opts.batch_timeout_micros, opts.max_enqueued_batches) == (1000, 0, 10)
    assert opts.num_batch_threads == schedulable_cpus()
    assert opts.allowed_batch_sizes == ()
    assert not opts.pad_variable_length_inputs and not opts.enable_large_batch_splitting
    assert opts.execution_batch_size == 1000


def test_every_field_is_read():
    opts = parse_batching_parameters("""
        max_batch_size { value: 64 } batch_timeout_micros { value: 2000 }
        max_enqueued_batches { value: 3 } num_batch_threads { value: 2 }
        thread_pool_name { value: "pool" } allowed_batch_sizes: 8 allowed_batch_sizes: 32
        pad_variable_length_inputs: true enable_large_batch_splitting { value: true }
        max_execution_batch_size { value: 32 }
    """)
    assert opts == BatchingOptions(64, 2000, 3, 2, "pool", (8, 32), True, True, 32)
    assert opts.execution_batch_size == 32
    opts.validate()


def test_execution_batch_size_needs_splitting():
    opts = parse_batching_parameters("max_batch_size { value: 64 } max_execution_batch_size { value: 8 }")
    assert opts.execution_batch_size == 64


def test_unparsable_text_is_invalid_argument():
    with pytest.raises(ServingError) as err:
        parse_batching_parameters("max_batch_size: 12")  # not the wrapper syntax
    assert err.value.code == Code.INVALID_ARGUMENT
    assert "BatchingParameters" in err.value.message


@pytest.mark.parametrize("text, message", [
    ("max_batch_size { value: 8 } allowed_batch_sizes: 2 allowed_batch_sizes: 4",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; expected 8"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 2 allowed_batch_sizes: 8",
     "allowed_batch_sizes entries must be monotonically increasing"),
    ("max_batch_size { value: 16 } enable_large_batch_splitting { value: true } "
     "max_execution_batch_size { value: 8 } allowed_batch_sizes: 4 allowed_batch_sizes: 16",
     "Last entry in allowed_batch_sizes must be equal to max_execution_batch_size; last entry was 16; "
     "expected 8"),
    ("max_batch_size { value: 4 } enable_large_batch_splitting { value: true } "
     "max_execution_batch_size { value: 8 }",
     "When enable_large_batch_splitting is true, input_batch_size_limit must be greater than or equal "
     "to max_execution_batch_size."),
    ("max_batch_size { value: 0 }", "input_batch_size_limit must be positive; was 0"),
    ("batch_timeout_micros { value: -1 }", "batch_timeout_micros must be non-negative; was -1"),
    ("max_enqueued_batches { value: 0 } enable_large_batch_splitting { value: true }",
     "max_enqueued_batches must be positive; was 0"),
])
def test_invalid_queue_options_fail_with_tf_messages(text, message):
    with pytest.raises(ServingError) as err:
        parse_batching_parameters(text).validate()
    assert err.value.code == Code.INVALID_ARGUMENT
    assert err.value.message == message


def test_zero_max_enqueued_batches_means_one_without_splitting():
    opts = parse_batching_parameters("max_enqueued_batches { value: 0 }")
    opts.validate()
    assert opts.effective_max_enqueued_batches == 1


def test_padded_size_is_the_next_allowed_size():
    opts = BatchingOptions(max_batch_size=8, allowed_batch_sizes=(2, 4, 8))
    assert [opts.padded_size(n) for n in (1, 2, 3, 5, 8)] == [2, 2, 4, 8, 8]
    assert BatchingOptions().padded_size(7) == 7


# -- flags and environment ----------------------------------------------------------------------

def test_batching_off_by_default():
    assert batching_config_from_server_options(flags(), environ={}) is None


def test_parameters_file_without_enable_batching_is_a_startup_error(tmp_path):
    path = tmp_path / "b.txt"
    path.write_text("max_batch_size { value: 8 }")
    with pytest.raises(BatchingConfigError) as err:
        batching_config_from_server_options(flags(batching_parameters_file=str(path)), environ={})
    assert str(err.value) == ("server_options.batching_parameters_file is set without setting "
                              "server_options.enable_batching to true.")


def test_enable_batching_without_file_uses_defaults_and_the_server_pool_name():
    config = batching_config_from_server_options(flags(enable_batching=True), environ={})
    assert config.options.thread_pool_name == SERVER_THREAD_POOL_NAME
    assert config.options.max_batch_size == 1000 and not config.per_model


def test_seed_000_environment_turns_batching_on_with_its_timeout(tmp_path):
    env = {"TF_ENABLE_BATCHING": "1", "TF_BATCH_TIMEOUT_MICROS": "10000"}
    config = batching_config_from_server_options(flags(), environ=env)
    assert config.options.batch_timeout_micros == 10000
    # The file's own value wins over the environment's.
    path = tmp_path / "b.txt"
    path.write_text("batch_timeout_micros { value: 5 }")
    config = batching_config_from_server_options(flags(batching_parameters_file=str(path)), environ=env)
    assert config.options.batch_timeout_micros == 5
    path.write_text("max_batch_size { value: 32 }")
    config = batching_config_from_server_options(flags(batching_parameters_file=str(path)), environ=env)
    assert (config.options.batch_timeout_micros, config.options.max_batch_size) == (10000, 32)


def test_environment_other_values_do_not_enable():
    assert batching_config_from_server_options(flags(), environ={"TF_ENABLE_BATCHING": "0"}) is None


def test_bad_environment_timeout_is_a_startup_error():
    with pytest.raises(BatchingConfigError, match="TF_BATCH_TIMEOUT_MICROS"):
        batching_config_from_server_options(flags(enable_batching=True),
                                            environ={"TF_BATCH_TIMEOUT_MICROS": "soon"})


def test_bad_num_batch_threads_and_bad_file_are_startup_errors(tmp_path):
    path = tmp_path / "b.txt"
    path.write_text("num_batch_threads { value: 0 }")
    with pytest.raises(BatchingConfigError, match="num_batch_threads must be positive; was 0"):
        batching_config_from_server_options(
            flags(enable_batching=True, batching_parameters_file=str(path)), environ={})
    with pytest.raises(BatchingConfigError, match="Cannot read batching parameters file"):
        batching_config_from_server_options(
            flags(enable_batching=True, batching_parameters_file=str(tmp_path / "missing")), environ={})


def test_per_model_flag_is_carried():
    config = batching_config_from_server_options(
        flags(enable_batching=True, enable_per_model_batching_parameters=True), environ={})
    assert config.per_model


def test_batching_mode_and_max_latency_come_from_flags_only(tmp_path):
    path = tmp_path / "per_model.txt"
    path.write_text("max_batch_size { value: 8 }")
    config = batching_config_from_server_options(
        flags(enable_batching=True, batching_mode="adaptive", batching_max_latency_ms=5.0), environ={})
    assert config.options.adaptive and config.options.max_latency_ms == 5.0
    per_model = config.with_server_choices(read_batching_parameters_file(str(path)))
    assert per_model.adaptive and per_model.max_batch_size == 8 and per_model.max_latency_ms == 5.0
    fixed = batching_config_from_server_options(flags(enable_batching=True), environ={})
    assert fixed.options.mode == "fixed" and not fixed.options.adaptive


def test_a_negative_max_latency_is_a_startup_error():
    with pytest.raises(BatchingConfigError, match="batching_max_latency_ms must be non-negative"):
        batching_config_from_server_options(
            flags(enable_batching=True, batching_mode="adaptive", batching_max_latency_ms=-1.0), environ={})


def test_the_batching_mode_flag_rejects_other_modes():
    from pyserving.cli.flags import FlagError, parse_flags

    options, _, _ = parse_flags(["--enable_batching", "--batching_mode=adaptive"])
    assert options.batching_mode == "adaptive"
    with pytest.raises(FlagError, match="expected fixed or adaptive"):
        parse_flags(["--batching_mode=fast"])

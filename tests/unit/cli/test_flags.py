import pytest

from pyserving.cli.flags import FLAGS, FlagError, parse_flags, usage


def test_defaults_match_tf_serving():
    options, unknown, help_requested = parse_flags([])
    assert (options.port, options.rest_api_port, options.model_name) == (8500, 0, "default")
    assert options.file_system_poll_wait_seconds == 1
    assert options.max_num_load_retries == 5
    assert options.load_retry_interval_micros == 60_000_000
    assert options.rest_api_timeout_in_ms == 30000
    assert options.enable_model_warmup is True and options.enable_batching is False
    assert options.saved_model_tags == "serve"
    assert unknown == [] and not help_requested


def test_later_flag_wins_as_in_docker_entrypoints():
    options, _, _ = parse_flags(["--port=8500", "--model_name=model", "--port=9000", "--model_name=mnist"])
    assert (options.port, options.model_name) == (9000, "mnist")


@pytest.mark.parametrize(
    "args, expected",
    [
        (["--enable_batching"], True),
        (["--enable_batching=true"], True),
        (["--enable_batching=false"], False),
        (["--enable_batching=1"], True),
        (["--noenable_batching"], False),
        (["-enable_batching"], True),
    ],
)
def test_boolean_forms(args, expected):
    assert parse_flags(args)[0].enable_batching is expected


def test_unknown_arguments_are_reported_not_fatal():
    options, unknown, _ = parse_flags(["--bogus=1", "stray", "--rest_api_port=8501"])
    assert unknown == ["--bogus=1", "stray"]
    assert options.rest_api_port == 8501


@pytest.mark.parametrize("arg", ["--port=abc", "--enable_batching=maybe", "--port"])
def test_malformed_values_are_errors(arg):
    with pytest.raises(FlagError):
        parse_flags([arg])


def test_help_and_usage_list_every_flag():
    assert parse_flags(["--help"])[2] is True
    text = usage()
    for flag in FLAGS:
        assert f"--{flag.name}=" in text


def test_options_are_frozen():
    options, _, _ = parse_flags([])
    with pytest.raises(Exception):
        options.port = 1


@pytest.mark.parametrize("arg, message", [
    ("--rest_port=8501", "unknown flag --rest_port (did you mean --rest_api_port?)"),
    ("--grpc_port=8500", "unknown flag --grpc_port (did you mean --port?)"),
    ("--model_base_pth=/m", "unknown flag --model_base_pth (did you mean --model_base_path?)"),
    ("--batching", "unknown flag --batching (did you mean --enable_batching?)"),
    ("--xyz", "unknown flag --xyz"),
    ("models", "unknown argument 'models': flags are written --name=value"),
])
def test_unknown_argument_names_the_nearest_flag(arg, message):
    from pyserving.cli.flags import unknown_argument_message

    assert unknown_argument_message(arg) == message

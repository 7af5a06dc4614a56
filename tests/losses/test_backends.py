"""Every public loss: XLA-compiled equals eager, and JAX equals TensorFlow.

Values and gradients (with respect to the logits / predictions of each case)
are compared; the cases include logits of +-100, so finiteness at the
extremes is checked on every backend too. One JAX subprocess serves the file.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import tensorflow as tf

from tfdet import losses
from tests.backends import run_under_jax
from tests.losses.cases import flatten_output, make_cases

CASES = make_cases()


def _scalar(output):
    return output["loss"] if isinstance(output, dict) else tf.reduce_sum(output)


def _flatten_gradient(gradient):
    if isinstance(gradient, dict):
        return {key: np.asarray(value) for key, value in sorted(gradient.items())}
    return {"": np.asarray(gradient)}


def _tf_value_and_gradient(name, jit_compile):
    fn_name, args, static, grad_arg = CASES[name]
    fn = functools.partial(getattr(losses, fn_name), **static)
    args = tf.nest.map_structure(tf.constant, args)

    def value_and_gradient(args):
        with tf.GradientTape() as tape:
            if grad_arg is not None:
                tape.watch(args[grad_arg])
            output = fn(**args)
            # Reduced inside the tape, or the sum would not be recorded.
            scalar = _scalar(output)
        gradient = None
        if grad_arg is not None:
            gradient = tape.gradient(scalar, args[grad_arg], unconnected_gradients=tf.UnconnectedGradients.ZERO)
        return output, gradient

    if jit_compile:
        value_and_gradient = tf.function(value_and_gradient, jit_compile=True)
    output, gradient = value_and_gradient(args)
    return flatten_output(output), (None if gradient is None else _flatten_gradient(gradient))


@functools.lru_cache(maxsize=None)
def _eager(name):
    return _tf_value_and_gradient(name, jit_compile=False)


def _assert_close(actual, expected, what):
    assert actual.keys() == expected.keys(), what
    for key in expected:
        assert np.all(np.isfinite(actual[key])), f"{what} {key}: not finite"
        np.testing.assert_allclose(actual[key], expected[key], rtol=2e-5, atol=1e-4, err_msg=f"{what} {key}")


@pytest.mark.parametrize("name", sorted(CASES))
def test_xla_matches_eager(name):
    value, gradient = _eager(name)
    xla_value, xla_gradient = _tf_value_and_gradient(name, jit_compile=True)
    _assert_close(xla_value, value, f"{name} value")
    if gradient is not None:
        _assert_close(xla_gradient, gradient, f"{name} gradient")


_JAX_SNIPPET = """
import jax
import jax.numpy as jnp
import numpy as np

from tfdet import losses
from tests.losses.cases import make_cases

CASES = make_cases()


def evaluate_all(all_args):
    # One jit over every case: a single XLA compilation keeps the subprocess short.
    results = {{}}
    for name, (fn_name, _, static, grad_arg) in CASES.items():
        call = lambda args, fn=getattr(losses, fn_name), static=static: fn(**args, **static)
        args = all_args[name]
        for key, value in flatten_output_jax(call(args)).items():
            results[f"{{name}}|value|{{key}}"] = value
        if grad_arg is not None:
            def scalar(diff, args=args, call=call, grad_arg=grad_arg):
                output = call({{**args, grad_arg: diff}})
                return output["loss"] if isinstance(output, dict) else jnp.sum(output)
            gradient = jax.grad(scalar)(args[grad_arg])
            for key, value in (gradient if isinstance(gradient, dict) else {{"": gradient}}).items():
                results[f"{{name}}|gradient|{{key}}"] = value
    return results


def flatten_output_jax(output):
    return dict(output) if isinstance(output, dict) else {{"": output}}


# Static arguments (Python numbers, tuples) stay in the closure; arrays are traced.
results = jax.jit(evaluate_all)({{name: case[1] for name, case in CASES.items()}})
np.savez({path!r}, **{{key: np.asarray(value) for key, value in results.items()}})
print("ok", len(results))
"""


@pytest.mark.slow
def test_jax_matches_tensorflow(tmp_path):
    path = str(tmp_path / "jax.npz")
    run_under_jax(_JAX_SNIPPET.format(path=path))
    with np.load(path) as stored:
        jax_results = dict(stored)
    for name in sorted(CASES):
        value, gradient = _eager(name)
        _assert_close({key: jax_results[f"{name}|value|{key}"] for key in value}, value, f"jax {name} value")
        if gradient is not None:
            _assert_close(
                {key: jax_results[f"{name}|gradient|{key}"] for key in gradient}, gradient, f"jax {name} gradient"
            )

"""SciPy's own tests for least_squares, pointed at jaxopt_lsq (run by run.py).

The file name does not match ``test_*.py``, so the default test run does not collect
it; ``python tests/scipy_suite/run.py`` does.
"""

import jax
import scipy.optimize.tests.test_least_squares as scipy_tests

import jaxopt_lsq

jax.config.update("jax_enable_x64", True)
scipy_tests.least_squares = jaxopt_lsq.least_squares

TestTRF = scipy_tests.TestTRF
TestDogbox = scipy_tests.TestDogbox
TestLM = scipy_tests.TestLM

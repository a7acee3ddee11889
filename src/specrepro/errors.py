"""The errors a user can cause with bad input; the CLI reports these without a traceback."""

from specrepro.config import ConfigError
from specrepro.data import DataError
from specrepro.decoding.base import MethodError
from specrepro.engine.level_draws import NonFiniteJointError
from specrepro.engine.runner import NonFiniteLogitsError
from specrepro.models.loader import ModelError
from specrepro.records import ResultsError

USER_ERRORS: tuple[type[BaseException], ...] = (
    ConfigError,
    DataError,
    MethodError,
    ModelError,
    ResultsError,
    NonFiniteLogitsError,
    NonFiniteJointError,
    FileNotFoundError,
    ValueError,
)

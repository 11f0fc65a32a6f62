"""What a skip means for the provider's sensors, in one place.

With ``soft_fail=True`` Airflow's sensor base class turns every ``AirflowException`` of a resumed task,
and every ``AirflowFailException`` of a poke, into a skip, so an unreachable MLflow or a bad profile
would read as "no drift" or "gate failed". Here a skip means only that the awaited outcome did not come
(:meth:`MlopsSensor.not_met`); errors fail the task, bad input without retries.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, NoReturn

from airflow.sdk import BaseOperator, BaseSensorOperator, PokeReturnValue
from airflow.sdk.exceptions import (
    AirflowException,
    AirflowFailException,
    AirflowSensorTimeout,
    AirflowSkipException,
    TaskDeferralTimeout,
)

from airflow_mlops.core.errors import MlopsInputError, MlopsServiceError
from airflow_mlops.core.redact import redact
from airflow_mlops.errors_airflow import airflow_errors

if TYPE_CHECKING:
    from airflow.sdk import Context


class NotMet(AirflowFailException):
    """The awaited outcome did not come (gate failed, no drift before the timeout): the only failure
    that ``soft_fail=True`` turns into a skip."""


class NotMetTimeout(AirflowSensorTimeout):
    """A :class:`NotMet` that is a timeout."""


class _CheckError(Exception):
    """Carries an error out of ``poke`` past the base class's soft_fail handling."""

    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def raise_event_error(event: dict[str, Any]) -> NoReturn:
    """Raise the error a trigger reported (see :func:`airflow_mlops.triggers.events.error_event`)."""
    message = redact(event.get("message") or "the trigger failed")
    kind = event.get("error_type")
    if kind == "input":
        raise MlopsInputError(message)
    if kind == "service":
        raise MlopsServiceError(message)
    raise AirflowException(message)


class MlopsSensor(BaseSensorOperator):
    """A sensor whose skips mean only "not met". Subclasses implement :meth:`check` (one evaluation,
    as ``poke``) and :meth:`start_deferred` (the deferrable ``execute``), and call :meth:`not_met`.

    :param deferrable: wait in the triggerer instead of a worker slot.
    """

    deferrable: bool = False

    def check(self, context: Context) -> bool | PokeReturnValue:
        """One evaluation: done (True or a PokeReturnValue) or not yet (False)."""
        raise NotImplementedError

    def start_deferred(self, context: Context) -> Any:
        """The deferrable ``execute``: evaluate once, then defer."""
        raise NotImplementedError

    def not_met(self, message: str, *, timeout: bool = False) -> NoReturn:
        """The outcome did not come: skip with ``soft_fail``, else fail (or time out)."""
        if self.soft_fail:
            raise AirflowSkipException(message)
        raise (NotMetTimeout if timeout else NotMet)(message)

    def poke(self, context: Context) -> bool | PokeReturnValue:
        """:meth:`check`; its errors escape the base class's soft_fail handling (see :meth:`execute`)."""
        try:
            return self.check(context)
        except (AirflowSkipException, NotMet, NotMetTimeout):
            raise
        except Exception as e:  # re-raised by execute as itself
            raise _CheckError(e) from e

    def execute(self, context: Context) -> Any:
        """Poke in a loop, or (deferrable) :meth:`start_deferred`; errors fail the task."""
        with airflow_errors():
            if self.deferrable:
                return self.start_deferred(context)
            try:
                return super().execute(context)
            except _CheckError as e:
                raise e.error from e.error.__cause__

    def resume_execution(self, next_method: str, next_kwargs: dict[str, Any] | None, context: Context) -> Any:
        """Resume after the trigger. Not the sensor base class's: that one skips on any error."""
        try:
            with airflow_errors():
                return BaseOperator.resume_execution(self, next_method, next_kwargs, context)
        except TaskDeferralTimeout as e:
            self.not_met(f"No outcome within the deferral's timeout ({e}).", timeout=True)

"""Loading a pipeline and describing it: parameters, outputs, warm hooks.

A pipeline is an ordinary callable. Its signature is the parameter schema (through
pydantic), its return value becomes `outputs` (always a JSON object), and its module
may define `init()` and `cleanup(state)` to warm up once per process.

JSON has no NaN nor Infinity. A parameter accepts them only when its type says so
with pydantic's `allow_inf_nan=True` (`x: Annotated[float, Field(allow_inf_nan=True)]`,
also inside a container, or on a nested model's config); every other float refuses
them. Where they are allowed, the run's input (and so `parameters_used`) carries them
as the strings `"NaN"`, `"Infinity"` and `"-Infinity"`, which the parameter's
validation turns back into the same float the pipeline receives.

A ZenML `@pipeline` (or `zenml:DEPLOYMENT`, a registered ZenML deployment) is another
kind of `Pipeline`, made by `warmrun.zenml`; that package, and zenml, are imported
only when the object to serve comes from zenml.
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import importlib.util
import inspect
import math
import sys
import typing
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Annotated, Any, get_args, get_origin

import pydantic_core
from pydantic import BaseModel, ConfigDict, TypeAdapter, create_model
from pydantic.fields import FieldInfo

from warmrun.context import RunContext
from warmrun.run import CloseZenMLRunInput, Progress, RunError

RESULT_KEY = "result"
"""Key under which a return value that is not a JSON object is put in `outputs`."""
ZENML_REFERENCE_PREFIX = "zenml:"
"""`zenml:DEPLOYMENT` serves a registered ZenML deployment, by name or id."""


class PipelineLoadError(Exception):
    """The pipeline reference cannot be loaded or its signature cannot be served."""


class InvalidOutputs(Exception):
    """A pipeline returned something that cannot be sent as JSON."""


@dataclasses.dataclass(frozen=True)
class Pipeline:
    """A loaded pipeline and everything derived from its signature."""

    name: str
    function: Callable[..., Any]
    parameters_model: type[BaseModel]
    context_parameter: str | None = None
    init: Callable[[], Any] | None = None
    cleanup: Callable[[Any], Any] | None = None

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.function)

    def parameters_schema(self) -> dict[str, Any]:
        return self.parameters_model.model_json_schema()

    @functools.cached_property
    def non_finite_parameters(self) -> frozenset[str]:
        """Parameters whose type opts into NaN and Infinity (`allow_inf_nan=True`)."""
        return frozenset(
            name
            for name, field in self.parameters_model.model_fields.items()
            if _allows_non_finite(field.annotation, field.metadata, set())
        )

    def parameters_json(self, parameters: BaseModel) -> dict[str, Any]:
        """The parameters as the run's input carries them: JSON, and read back by the
        worker as the very values validated here. Raises pydantic's ValidationError
        when a value cannot make that trip (a non-finite float of a strict field)."""
        data = parameters.model_dump(mode="json")
        if not any(_has_non_finite(data.get(name)) for name in self.non_finite_parameters):
            return data
        data = {name: _non_finite_as_text(value) for name, value in data.items()}
        self.validate(data)  # what the worker will do with it
        return data

    def outputs_schema(self) -> dict[str, Any] | None:
        """JSON schema of `outputs`, when the return annotation says what it is."""
        annotation = _type_hints(self.function).get("return", inspect.Signature.empty)
        if annotation in (inspect.Signature.empty, Any, None, type(None)):
            return None
        schema = TypeAdapter(annotation).json_schema()
        if schema.get("type") == "object":
            return schema
        return {
            "type": "object",
            "properties": {RESULT_KEY: schema},
            "required": [RESULT_KEY],
        }

    def validate(self, parameters: dict[str, Any]) -> BaseModel:
        """Validate parameters; raises pydantic's ValidationError with field paths."""
        return self.parameters_model.model_validate(parameters)

    def arguments(self, parameters: BaseModel, context: RunContext) -> dict[str, Any]:
        """Keyword arguments for the call: validated values plus the run context."""
        kwargs = {name: getattr(parameters, name) for name in type(parameters).model_fields}
        if self.context_parameter:
            kwargs[self.context_parameter] = context
        return kwargs

    def error_text(self, error: RunError, progress: Progress | None) -> str:
        """The `error` of a sync answer for a run that ended with `error`."""
        return f"{error.type}: {error.message}"

    def close_run(self, input: CloseZenMLRunInput) -> None:
        """Finish the ZenML run of a run warmrun gave up on; plain pipelines have none."""

    def settings_defaults(self) -> dict[str, Any]:
        """Settings this kind of pipeline needs by default (environment and flags win)."""
        return {}

    @property
    def links_zenml_runs(self) -> bool:
        """Each run is also a ZenML pipeline run, named in the run's memo."""
        return False

    @staticmethod
    def to_outputs(value: Any, max_bytes: int | None = None) -> Outputs:
        """Turn a return value into the run's `outputs` JSON object.

        Checked here, in the worker, so that an output Temporal would refuse (over its
        payload limit) fails the run with a clear error instead of leaving it stuck.
        """
        try:
            jsonable = pydantic_core.to_jsonable_python(value)
            if not isinstance(jsonable, dict):
                jsonable = {RESULT_KEY: jsonable}
            size = len(pydantic_core.to_json(jsonable))
        except (pydantic_core.PydanticSerializationError, ValueError) as err:
            raise InvalidOutputs(
                f"the pipeline returned a {type(value).__name__} "
                f"that is not JSON-serialisable: {err}"
            ) from None
        if max_bytes is not None and size > max_bytes:
            raise InvalidOutputs(
                f"the pipeline's outputs take {size} bytes as JSON, over the limit of "
                f"{max_bytes} (WARMRUN_MAX_OUTPUT_BYTES); store large results elsewhere "
                "and return a reference"
            )
        return Outputs(jsonable, size)


@dataclasses.dataclass(frozen=True)
class Outputs:
    """A run's outputs as JSON, and their size once encoded."""

    value: dict[str, Any]
    size: int


NON_FINITE_TEXT = {math.inf: "Infinity", -math.inf: "-Infinity"}


def _non_finite_as_text(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return "NaN" if math.isnan(value) else NON_FINITE_TEXT[value]
    if isinstance(value, dict):
        return {key: _non_finite_as_text(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_non_finite_as_text(item) for item in value]
    return value


def _has_non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_has_non_finite(item) for item in value.values())
    if isinstance(value, list):
        return any(_has_non_finite(item) for item in value)
    return False


def _allows_non_finite(annotation: Any, metadata: Iterable[Any], seen: set[int]) -> bool:
    """Whether `allow_inf_nan=True` appears on the field, anywhere in its type, or in
    the config of a model it contains: the explicit opt-in for NaN and Infinity."""
    for item in metadata:
        if getattr(item, "allow_inf_nan", None) is True:
            return True
        if isinstance(item, FieldInfo) and _allows_non_finite(None, item.metadata, seen):
            return True
    if annotation is None or id(annotation) in seen:
        return False
    seen.add(id(annotation))
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation.model_config.get("allow_inf_nan") is True or any(
            _allows_non_finite(field.annotation, field.metadata, seen)
            for field in annotation.model_fields.values()
        )
    if get_origin(annotation) is Annotated:
        base, *extra = get_args(annotation)
        return _allows_non_finite(base, extra, seen)
    return any(_allows_non_finite(arg, (), seen) for arg in get_args(annotation))


def load_pipeline(reference: str) -> Pipeline:
    """Load `package.module:attribute`, `path/to/file.py:attribute` or `zenml:DEPLOYMENT`."""
    if reference.startswith(ZENML_REFERENCE_PREFIX):
        return _zenml().load_deployment(reference.removeprefix(ZENML_REFERENCE_PREFIX))
    module_ref, _, attribute = reference.rpartition(":")
    if not module_ref or not attribute:
        raise PipelineLoadError(
            f"pipeline reference {reference!r} must look like 'module:function' "
            "or 'path/to/file.py:function'"
        )
    module = _import(module_ref)
    try:
        function = getattr(module, attribute)
    except AttributeError:
        raise PipelineLoadError(f"{module_ref!r} has no attribute {attribute!r}") from None
    if type(function).__module__.partition(".")[0] == "zenml":
        return _zenml().serve_pipeline(function)
    if not callable(function):
        raise PipelineLoadError(f"{reference!r} is not callable")
    model, context_parameter = _parameters_model(attribute, function)
    return Pipeline(
        name=attribute,
        function=function,
        parameters_model=model,
        context_parameter=context_parameter,
        init=_hook(module, "init"),
        cleanup=_hook(module, "cleanup"),
    )


def _zenml() -> Any:
    """`warmrun.zenml`, imported now that a ZenML object is to be served."""
    try:
        import warmrun.zenml
    except ImportError as err:
        raise PipelineLoadError(
            f"serving a ZenML pipeline needs ZenML: pip install 'warmrun[zenml]' ({err})"
        ) from None
    return warmrun.zenml


def _import(module_ref: str) -> Any:
    if module_ref.endswith(".py") or "/" in module_ref:
        return _import_file(Path(module_ref).resolve())
    try:
        return importlib.import_module(module_ref)
    except ModuleNotFoundError as err:
        raise PipelineLoadError(f"cannot import module {module_ref!r}: {err}") from None


def _import_file(path: Path) -> Any:
    """Import a pipeline file without letting it shadow another module.

    Its folder is appended to `sys.path` (so the pipeline can import its siblings,
    while the standard library and installed packages keep their names), and a file
    named like another module (`json.py`) is registered under a name of its own.
    """
    if not path.is_file():
        raise PipelineLoadError(f"no such pipeline file: {path}")
    folder = str(path.parent)
    if folder not in sys.path:
        sys.path.append(folder)
    name = _module_name(path)
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise PipelineLoadError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _module_name(path: Path) -> str:
    """The file's stem, unless that names something else: a standard-library module,
    another loaded module, or a module importable from elsewhere on `sys.path`."""
    stem = path.stem
    loaded = sys.modules.get(stem)
    if loaded is not None:
        taken = Path(getattr(loaded, "__file__", None) or "").resolve() != path
    elif stem in sys.stdlib_module_names:
        taken = True
    else:
        try:
            found = importlib.util.find_spec(stem)
        except (ImportError, ValueError):
            found = None
        taken = found is not None and Path(found.origin or "").resolve() != path
    return f"warmrun_pipeline_{stem}" if taken else stem


def _hook(module: Any, name: str) -> Callable[..., Any] | None:
    hook = getattr(module, name, None)
    return hook if callable(hook) else None


def _type_hints(function: Callable[..., Any]) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function, include_extras=True)
    except Exception as err:  # unresolved forward references, mostly
        raise PipelineLoadError(f"cannot resolve the type hints of {function!r}: {err}") from None


def _parameters_model(
    name: str, function: Callable[..., Any]
) -> tuple[type[BaseModel], str | None]:
    hints = _type_hints(function)
    fields: dict[str, Any] = {}
    context_parameter = None
    for parameter in inspect.signature(function).parameters.values():
        annotation = hints.get(parameter.name, Any)
        if annotation is RunContext:
            context_parameter = parameter.name
            continue
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            raise PipelineLoadError(
                f"pipeline {name!r} takes *{parameter.name}; parameters must be named"
            )
        if parameter.kind is parameter.POSITIONAL_ONLY:
            raise PipelineLoadError(
                f"pipeline {name!r} has positional-only parameter {parameter.name!r}"
            )
        default = ... if parameter.default is parameter.empty else parameter.default
        fields[parameter.name] = (annotation, default)
    title = "".join(part.capitalize() for part in name.split("_")) + "Parameters"
    try:
        model = create_model(
            title, __config__=ConfigDict(extra="forbid", allow_inf_nan=False), **fields
        )
    except Exception as err:
        raise PipelineLoadError(f"cannot build a parameter schema for {name!r}: {err}") from None
    return model, context_parameter

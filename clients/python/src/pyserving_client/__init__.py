"""pyserving-client: TF Serving's API from Python, numpy in and numpy out, without TensorFlow.

    from pyserving_client import Client
    with Client("localhost:8500") as client:          # gRPC; "http://localhost:8501" for REST
        outputs = client.predict("mnist", images)      # {"output name": np.ndarray}

Works against pyserving and against TensorFlow Serving itself. The exceptions are in
`pyserving_client.errors` (a tree under `ServingError`).
"""

from ._client import AsyncClient, Client
from ._config import TLS, Retry
from ._types import ModelMetadata, ModelVersionStatus, SignatureInfo, TensorInfo
from .errors import (
    Code,
    DeadlineExceededError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
    PermissionDeniedError,
    ResourceExhaustedError,
    ServingError,
    UnauthenticatedError,
    UnavailableError,
    UnimplementedError,
)

__version__ = "0.1.0"

__all__ = [
    "Client", "AsyncClient", "TLS", "Retry",
    "ModelMetadata", "ModelVersionStatus", "SignatureInfo", "TensorInfo",
    "Code", "ServingError", "InvalidArgumentError", "NotFoundError", "DeadlineExceededError",
    "UnavailableError", "UnauthenticatedError", "PermissionDeniedError", "ResourceExhaustedError",
    "FailedPreconditionError", "UnimplementedError",
]

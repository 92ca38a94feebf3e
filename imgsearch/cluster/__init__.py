"""Index runs past one machine: captioning and embedding on a Ray cluster.

The driver (the machine running `imgsearch index`) still walks, identifies and hashes the
pictures, and writes the caption cache and Milvus; the cluster decodes, captions and embeds.

- connection.py: finding Ray and joining a cluster (the only module that calls ray.init);
- workers.py: the code the cluster runs (decode tasks, captioning and embedding actors);
- pipeline.py: the Ray Data pipeline those make, sized for the cluster at hand;
- stand_in.py: the captioner the driver holds meanwhile (it never loads the model);
- service.py: RayCaptionService, the indexer's CaptionService.

Importing this package does not import Ray; a run without it installed says what to install.
"""

from __future__ import annotations

from .connection import cluster_address
from .service import RayCaptionService

__all__ = ["RayCaptionService", "cluster_address"]

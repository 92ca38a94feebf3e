"""The server's routes, one module per resource; each makes an APIRouter over one Served."""

from . import images, index_jobs, page, search, status

ROUTERS = (page.router, search.router, images.router, status.router, index_jobs.router)

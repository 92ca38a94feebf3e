"""The server's routes, one module per resource; each makes an APIRouter over one Served."""

from . import images, index_jobs, page, picture_search, pictures, search, status

# picture_search before search: its form route and the JSON route share POST /api/search.
ROUTERS = (
    page.router,
    picture_search.router,
    search.router,
    images.router,
    pictures.router,
    status.router,
    index_jobs.router,
)

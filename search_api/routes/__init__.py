"""HTTP routes, one APIRouter per area; `search_api.app.ROUTERS` lists the ones the app serves."""

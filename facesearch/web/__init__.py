"""The web page of FaceSearch: a small HTTP gateway (Starlette on uvicorn) that serves static
HTML/CSS/JS and turns the page's JSON calls into facesearch.v1 gRPC calls to the search service."""

"""FaceSearch: shared pieces of the embedder and search services (generated API in facesearch.v1,
error types, gRPC server plumbing, logging and metrics) and the `facesearch` command."""

# syntax=docker/dockerfile:1.7
# A model-pack image: only the ONNX files plus busybox `cp`, used by the Kubernetes init container
# that copies the pack into the embedder pod (rolling out a new pack = a new tag of this image).
# Build with the models directory as the context (it holds <pack>/*.onnx, insightface's layout):
#   docker build -f deploy/docker/models.Dockerfile --build-arg MODEL_PACK=buffalo_l \
#     -t facesearch-models:buffalo_l-1 /path/to/models_dir

FROM busybox:1.37-musl
ARG MODEL_PACK=buffalo_l
COPY --chown=0:0 ${MODEL_PACK}/ /models/${MODEL_PACK}/
USER 10001:10001
ENTRYPOINT ["cp", "-R", "/models/.", "/mnt/models/"]

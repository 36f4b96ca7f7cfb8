"""Generated from protos/facesearch/v1 by facesearch.codegen: do not edit."""

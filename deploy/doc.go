// Package deploy holds the checks of natter's deployment files: the
// Kubernetes manifests decode strictly into the API types, compose.yaml
// passes docker-compose's own validation, and every service builds as the
// static binary its image needs. The files themselves are beside it:
// nats/ (cluster and permissions), docker/, compose.yaml, k8s/.
package deploy

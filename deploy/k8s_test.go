package deploy

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"maps"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
	"sigs.k8s.io/yaml"
)

// k8sNamespace is where kustomization.yaml puts everything.
const k8sNamespace = "natter"

// natterApps are natter's own programs: each is a Deployment, a Service and a
// NATS user of this name, and reads its settings from ../<name>/*.go.
var natterApps = []string{"auth", "presence", "gateway"}

// documentedSecrets are the secrets the operator creates (their commands
// are at the top of kustomization.yaml) and the keys each holds. Nothing
// may reference another secret or key.
var documentedSecrets = map[string][]string{
	"natter-nats": {
		"gateway-password", "auth-password", "presence-password",
		"NATS_GATEWAY_PASSWORD", "NATS_AUTH_PASSWORD", "NATS_PRESENCE_PASSWORD",
		"NATS_WATCH_PASSWORD", "NATS_ADMIN_PASSWORD", "NATS_SYS_PASSWORD",
	},
	"natter-auth":  {"signing-key.pem"},
	"natter-mongo": {"uri"},
	"natter-tls":   {"tls.crt", "tls.key"}, // the Ingress's certificate
}

// natsConfigMap is the ConfigMap kustomization.yaml generates from nats/.
const natsConfigMap = "nats-config"

// k8sKinds maps apiVersion/kind to the Go type a document decodes into. A
// kind not listed here fails the test: add it with its type.
var k8sKinds = map[string]func() any{
	"v1/Namespace":                           func() any { return new(corev1.Namespace) },
	"v1/Service":                             func() any { return new(corev1.Service) },
	"apps/v1/Deployment":                     func() any { return new(appsv1.Deployment) },
	"apps/v1/StatefulSet":                    func() any { return new(appsv1.StatefulSet) },
	"policy/v1/PodDisruptionBudget":          func() any { return new(policyv1.PodDisruptionBudget) },
	"networking.k8s.io/v1/NetworkPolicy":     func() any { return new(networkingv1.NetworkPolicy) },
	"networking.k8s.io/v1/Ingress":           func() any { return new(networkingv1.Ingress) },
	"autoscaling/v2/HorizontalPodAutoscaler": func() any { return new(autoscalingv2.HorizontalPodAutoscaler) },
}

// yamlDocument is one document of a YAML file under k8s/.
type yamlDocument struct {
	name string // file#index, for messages
	data []byte
}

// manifests is every object of k8s/*.yaml, decoded into its API type.
type manifests struct {
	namespaces   []*corev1.Namespace
	services     []*corev1.Service
	deployments  []*appsv1.Deployment
	statefulSets []*appsv1.StatefulSet
	pdbs         []*policyv1.PodDisruptionBudget
	netpols      []*networkingv1.NetworkPolicy
	ingresses    []*networkingv1.Ingress
	hpas         []*autoscalingv2.HorizontalPodAutoscaler
	all          []metav1.Object
}

// workload is a Deployment or StatefulSet: what owns pods.
type workload struct {
	kind, name string
	selector   *metav1.LabelSelector
	pod        *corev1.PodTemplateSpec
}

func (m *manifests) workloads() []workload {
	var ws []workload
	for _, d := range m.deployments {
		ws = append(ws, workload{"Deployment", d.Name, d.Spec.Selector, &d.Spec.Template})
	}
	for _, s := range m.statefulSets {
		ws = append(ws, workload{"StatefulSet", s.Name, s.Spec.Selector, &s.Spec.Template})
	}
	return ws
}

func (m *manifests) deployment(t testing.TB, name string) *appsv1.Deployment {
	t.Helper()
	for _, d := range m.deployments {
		if d.Name == name {
			return d
		}
	}
	t.Fatalf("no Deployment %q", name)
	return nil
}

func (m *manifests) workload(t testing.TB, name string) workload {
	t.Helper()
	for _, w := range m.workloads() {
		if w.name == name {
			return w
		}
	}
	t.Fatalf("no workload %q", name)
	return workload{}
}

// manifestFiles are the k8s/*.yaml files, relative to this directory.
func manifestFiles(t testing.TB) []string {
	t.Helper()
	files, err := filepath.Glob("k8s/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no k8s/*.yaml: %v", err)
	}
	return files
}

var documentSeparator = regexp.MustCompile(`^---\s*(#.*)?$`)

// splitDocuments splits a multi-document YAML file at its "---" lines,
// leaving out documents of comments and blank lines only.
func splitDocuments(t testing.TB, file string) []yamlDocument {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var docs []yamlDocument
	var cur bytes.Buffer
	content := false
	flush := func() {
		if content {
			docs = append(docs, yamlDocument{name: fmt.Sprintf("%s#%d", file, len(docs)), data: bytes.Clone(cur.Bytes())})
		}
		cur.Reset()
		content = false
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if documentSeparator.MatchString(line) {
			flush()
			continue
		}
		if s := strings.TrimSpace(line); s != "" && !strings.HasPrefix(s, "#") {
			content = true
		}
		cur.WriteString(line)
		cur.WriteByte('\n')
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	flush()
	return docs
}

// decodeStrict decodes a document into its API type, failing on unknown
// or duplicate fields, and on fields spelt with the wrong case (which
// encoding/json accepts but the API server does not).
func decodeStrict(doc []byte, into any) error {
	if err := yaml.UnmarshalStrict(doc, into); err != nil {
		return err
	}
	var written, decoded any
	if err := yaml.Unmarshal(doc, &written); err != nil {
		return err
	}
	b, err := json.Marshal(into)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(b, &decoded); err != nil {
		return err
	}
	return sameFieldNames("", written, decoded)
}

// sameFieldNames reports a field of written that decoded (the typed object
// encoded again) spells differently. Fields decoded lacks altogether were
// zero values dropped by omitempty.
func sameFieldNames(at string, written, decoded any) error {
	switch w := written.(type) {
	case map[string]any:
		d, _ := decoded.(map[string]any)
		for k, v := range w {
			dv, ok := d[k]
			if !ok {
				for dk := range d {
					if strings.EqualFold(dk, k) {
						return fmt.Errorf("%s%s: the field is spelt %q", at, k, dk)
					}
				}
				continue
			}
			if err := sameFieldNames(at+k+".", v, dv); err != nil {
				return err
			}
		}
	case []any:
		d, _ := decoded.([]any)
		for i := range min(len(w), len(d)) {
			if err := sameFieldNames(fmt.Sprintf("%s%d.", at, i), w[i], d[i]); err != nil {
				return err
			}
		}
	}
	return nil
}

// loadManifests decodes every document of k8s/*.yaml strictly.
func loadManifests(t testing.TB) *manifests {
	t.Helper()
	m := &manifests{}
	for _, file := range manifestFiles(t) {
		for _, doc := range splitDocuments(t, file) {
			obj, err := decodeDocument(doc)
			if err != nil {
				t.Fatalf("%s: %v", doc.name, err)
			}
			m.add(obj)
		}
	}
	return m
}

func decodeDocument(doc yamlDocument) (metav1.Object, error) {
	var head metav1.TypeMeta
	if err := yaml.Unmarshal(doc.data, &head); err != nil {
		return nil, err
	}
	newObj, ok := k8sKinds[head.APIVersion+"/"+head.Kind]
	if !ok {
		return nil, fmt.Errorf("unknown apiVersion/kind %q/%q", head.APIVersion, head.Kind)
	}
	obj := newObj()
	if err := decodeStrict(doc.data, obj); err != nil {
		return nil, fmt.Errorf("%s: %w", head.Kind, err)
	}
	return obj.(metav1.Object), nil
}

func (m *manifests) add(obj metav1.Object) {
	m.all = append(m.all, obj)
	switch o := obj.(type) {
	case *corev1.Namespace:
		m.namespaces = append(m.namespaces, o)
	case *corev1.Service:
		m.services = append(m.services, o)
	case *appsv1.Deployment:
		m.deployments = append(m.deployments, o)
	case *appsv1.StatefulSet:
		m.statefulSets = append(m.statefulSets, o)
	case *policyv1.PodDisruptionBudget:
		m.pdbs = append(m.pdbs, o)
	case *networkingv1.NetworkPolicy:
		m.netpols = append(m.netpols, o)
	case *networkingv1.Ingress:
		m.ingresses = append(m.ingresses, o)
	case *autoscalingv2.HorizontalPodAutoscaler:
		m.hpas = append(m.hpas, o)
	}
}

// TestManifestsDecodeStrictly decodes each document on its own, so every
// broken one is named.
func TestManifestsDecodeStrictly(t *testing.T) {
	n := 0
	for _, file := range manifestFiles(t) {
		for _, doc := range splitDocuments(t, file) {
			n++
			t.Run(doc.name, func(t *testing.T) {
				obj, err := decodeDocument(doc)
				if err != nil {
					t.Fatal(err)
				}
				if obj.GetName() == "" {
					t.Error("no metadata.name")
				}
				if ns := obj.GetNamespace(); ns != "" && ns != k8sNamespace {
					t.Errorf("namespace %q: leave it to kustomization.yaml (%s)", ns, k8sNamespace)
				}
			})
		}
	}
	if n == 0 {
		t.Fatal("no documents")
	}
}

// TestDecodeStrictRejects shows the decoder refuses what kubectl would.
func TestDecodeStrictRejects(t *testing.T) {
	tests := []struct{ name, doc string }{
		{"unknown field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {selektor: {a: b}}\n"},
		{"misplaced field", "apiVersion: v1\nkind: Service\nmetadata: {name: x, selector: {a: b}}\n"},
		{"wrong case", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {clusterip: None}\n"},
		{"duplicate field", "apiVersion: v1\nkind: Service\nmetadata: {name: x}\nspec: {type: ClusterIP, type: NodePort}\n"},
		{"wrong type", "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: x}\nspec: {replicas: two}\n"},
		{"unknown kind", "apiVersion: v1\nkind: Servise\nmetadata: {name: x}\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := decodeDocument(yamlDocument{name: tt.name, data: []byte(tt.doc)}); err == nil {
				t.Error("decoded without error")
			} else {
				t.Log(err)
			}
		})
	}
}

// kustomization is the part of kustomization.yaml natter uses.
type kustomization struct {
	APIVersion         string   `json:"apiVersion"`
	Kind               string   `json:"kind"`
	Namespace          string   `json:"namespace"`
	Resources          []string `json:"resources"`
	ConfigMapGenerator []struct {
		Name  string   `json:"name"`
		Files []string `json:"files"`
	} `json:"configMapGenerator"`
}

func loadKustomization(t testing.TB) (kustomization, string) {
	t.Helper()
	data, err := os.ReadFile("kustomization.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var k kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatalf("kustomization.yaml: %v", err)
	}
	return k, string(data)
}

// generatedFiles maps each file key of the ConfigMap generated as name to
// its path (relative to this directory).
func generatedFiles(t testing.TB, k kustomization, name string) map[string]string {
	t.Helper()
	for _, g := range k.ConfigMapGenerator {
		if g.Name != name {
			continue
		}
		files := map[string]string{}
		for _, f := range g.Files {
			key, p, ok := strings.Cut(f, "=")
			if !ok {
				key, p = path.Base(f), f
			}
			files[key] = p
		}
		return files
	}
	t.Fatalf("kustomization.yaml generates no ConfigMap %q", name)
	return nil
}

func TestKustomization(t *testing.T) {
	k, _ := loadKustomization(t)
	if k.APIVersion != "kustomize.config.k8s.io/v1beta1" || k.Kind != "Kustomization" {
		t.Errorf("apiVersion/kind = %s/%s", k.APIVersion, k.Kind)
	}
	if k.Namespace != k8sNamespace {
		t.Errorf("namespace = %q, want %q", k.Namespace, k8sNamespace)
	}
	var want []string
	for _, f := range manifestFiles(t) {
		want = append(want, filepath.ToSlash(f))
	}
	got := slices.Sorted(slices.Values(k.Resources))
	if !slices.Equal(got, want) {
		t.Errorf("resources = %v, want every k8s/*.yaml: %v", got, want)
	}
	for _, g := range k.ConfigMapGenerator {
		for key, p := range generatedFiles(t, k, g.Name) {
			if strings.HasPrefix(path.Clean(p), "..") {
				t.Errorf("configMapGenerator %s: %s is outside deploy/ (kustomize refuses it)", g.Name, p)
			}
			if _, err := os.Stat(p); err != nil {
				t.Errorf("configMapGenerator %s: file %s (key %s): %v", g.Name, p, key, err)
			}
		}
	}
	generatedFiles(t, k, natsConfigMap)

	m := loadManifests(t)
	if len(m.namespaces) != 1 || m.namespaces[0].Name != k8sNamespace {
		t.Fatalf("want one Namespace %q", k8sNamespace)
	}
	if got := m.namespaces[0].Labels["pod-security.kubernetes.io/enforce"]; got != "restricted" {
		t.Errorf("namespace pod security enforce = %q, want restricted", got)
	}
}

// container is the one container of a workload's pods.
func onlyContainer(t testing.TB, w workload) *corev1.Container {
	t.Helper()
	if n := len(w.pod.Spec.Containers); n != 1 {
		t.Fatalf("%s %s: %d containers, want 1", w.kind, w.name, n)
	}
	return &w.pod.Spec.Containers[0]
}

func envVar(c *corev1.Container, name string) (corev1.EnvVar, bool) {
	for _, e := range c.Env {
		if e.Name == name {
			return e, true
		}
	}
	return corev1.EnvVar{}, false
}

// containerPort resolves a port given by number or name on c.
func containerPort(c *corev1.Container, p intstr.IntOrString) (corev1.ContainerPort, bool) {
	for _, cp := range c.Ports {
		if (p.Type == intstr.Int && cp.ContainerPort == p.IntVal) || (p.Type == intstr.String && cp.Name == p.StrVal) {
			return cp, true
		}
	}
	return corev1.ContainerPort{}, false
}

func selects(t testing.TB, sel *metav1.LabelSelector, podLabels map[string]string) bool {
	t.Helper()
	s, err := metav1.LabelSelectorAsSelector(sel)
	if err != nil {
		t.Fatalf("selector %v: %v", sel, err)
	}
	return s.Matches(labels.Set(podLabels))
}

func TestDeployments(t *testing.T) {
	m := loadManifests(t)
	var names []string
	for _, d := range m.deployments {
		names = append(names, d.Name)
	}
	if !slices.Equal(slices.Sorted(slices.Values(names)), slices.Sorted(slices.Values(natterApps))) {
		t.Errorf("Deployments %v, want %v", names, natterApps)
	}
	sts := m.statefulSets
	if len(sts) != 1 {
		t.Fatalf("%d StatefulSets, want 1 (nats)", len(sts))
	}
	for _, name := range natterApps {
		t.Run(name, func(t *testing.T) {
			d := m.deployment(t, name)
			w := m.workload(t, name)
			c := onlyContainer(t, w)
			if !selects(t, d.Spec.Selector, d.Spec.Template.Labels) {
				t.Errorf("selector %v does not match the pod labels %v", d.Spec.Selector, d.Spec.Template.Labels)
			}
			// One port for the service, and maybe "ops" for metrics
			// alone (OPS_ADDR), where the scraper is pointed.
			if len(c.Ports) < 1 || len(c.Ports) > 2 || (len(c.Ports) == 2 && c.Ports[1].Name != "ops") {
				t.Fatalf("container ports %+v, want the service's, then maybe ops", c.Ports)
			}
			port := c.Ports[0]
			if len(c.Ports) == 2 {
				ops := strconv.Itoa(int(c.Ports[1].ContainerPort))
				if e, _ := envVar(c, "OPS_ADDR"); !strings.HasSuffix(e.Value, ":"+ops) {
					t.Errorf("OPS_ADDR = %q, want it on the ops port %s", e.Value, ops)
				}
				if got := d.Spec.Template.Annotations["prometheus.io/port"]; got != ops {
					t.Errorf("metrics scraped on port %q, want the ops port %s", got, ops)
				}
			}

			// Probes: /readyz decides traffic, /healthz restarts, both on
			// the service's own port.
			for _, p := range []struct {
				kind  string
				probe *corev1.Probe
				path  string
			}{
				{"readinessProbe", c.ReadinessProbe, "/readyz"},
				{"livenessProbe", c.LivenessProbe, "/healthz"},
			} {
				if p.probe == nil || p.probe.HTTPGet == nil {
					t.Errorf("%s: want an httpGet probe", p.kind)
					continue
				}
				if p.probe.HTTPGet.Path != p.path {
					t.Errorf("%s path = %q, want %q", p.kind, p.probe.HTTPGet.Path, p.path)
				}
				if cp, ok := containerPort(c, p.probe.HTTPGet.Port); !ok || cp.ContainerPort != port.ContainerPort {
					t.Errorf("%s port %s is not the container port %d", p.kind, p.probe.HTTPGet.Port.String(), port.ContainerPort)
				}
			}

			// The service listens where the container port says.
			if e, _ := envVar(c, "HTTP_ADDR"); !strings.HasSuffix(e.Value, ":"+strconv.Itoa(int(port.ContainerPort))) {
				t.Errorf("HTTP_ADDR = %q, want it on port %d", e.Value, port.ContainerPort)
			} else if host, _, _ := net.SplitHostPort(e.Value); host == "127.0.0.1" || host == "localhost" {
				t.Errorf("HTTP_ADDR = %q: unreachable from outside the pod", e.Value)
			}

			for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
				if q, ok := c.Resources.Requests[r]; !ok || q.IsZero() {
					t.Errorf("no %s request", r)
				}
			}
			if q, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok || q.IsZero() {
				t.Error("no memory limit")
			}

			ru := d.Spec.Strategy.RollingUpdate
			if d.Spec.Strategy.Type != appsv1.RollingUpdateDeploymentStrategyType || ru == nil ||
				ru.MaxUnavailable == nil || ru.MaxUnavailable.IntValue() != 0 || ru.MaxSurge == nil || ru.MaxSurge.IntValue() != 1 {
				t.Errorf("strategy = %+v, want RollingUpdate maxUnavailable 0, maxSurge 1", d.Spec.Strategy)
			}

			// At least two pods: by replicas, or by the HPA that owns the
			// count (then replicas must be unset, or every apply resets it).
			var hpa *autoscalingv2.HorizontalPodAutoscaler
			for _, h := range m.hpas {
				if h.Spec.ScaleTargetRef.Kind == "Deployment" && h.Spec.ScaleTargetRef.Name == name {
					hpa = h
				}
			}
			switch {
			case hpa != nil && d.Spec.Replicas != nil:
				t.Error("replicas is set although an HPA scales this Deployment: apply would reset the HPA's count")
			case hpa != nil && (hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2):
				t.Error("HPA minReplicas < 2")
			case hpa == nil && (d.Spec.Replicas == nil || *d.Spec.Replicas < 2):
				t.Error("fewer than 2 replicas")
			}

			// NATS: the service's own user, its password from the secret,
			// R3 streams and buckets, the cluster's nodes.
			if e, _ := envVar(c, "NATS_USER"); e.Value != name {
				t.Errorf("NATS_USER = %q, want %q", e.Value, name)
			}
			if e, _ := envVar(c, "NATS_PASSWORD"); e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil ||
				e.ValueFrom.SecretKeyRef.Name != "natter-nats" || e.ValueFrom.SecretKeyRef.Key != name+"-password" {
				t.Errorf("NATS_PASSWORD = %+v, want secret natter-nats key %s-password", e, name)
			}
			if e, _ := envVar(c, "JS_REPLICAS"); e.Value != strconv.Itoa(int(*sts[0].Spec.Replicas)) {
				t.Errorf("JS_REPLICAS = %q, want the NATS cluster size %d", e.Value, *sts[0].Spec.Replicas)
			}
			natsURL, _ := envVar(c, "NATS_URL")
			checkNATSURL(t, m, natsURL.Value)
			if e, _ := envVar(c, "LOG_FORMAT"); e.Value != "json" {
				t.Errorf("LOG_FORMAT = %q, want json", e.Value)
			}

			// Every variable is one the service reads: a typo would be
			// ignored silently at run time.
			reads := serviceEnv(t, name)
			seen := map[string]bool{}
			for _, e := range c.Env {
				if !reads[e.Name] {
					t.Errorf("env %s: %s does not read it (see ../%s/main.go, ../services/config/config.go)", e.Name, name, name)
				}
				if seen[e.Name] {
					t.Errorf("env %s set twice", e.Name)
				}
				seen[e.Name] = true
			}
			if len(c.EnvFrom) > 0 {
				t.Error("envFrom: list variables one by one, so each is checked")
			}

			checkImage(t, c)
		})
	}

	// The gateway's AUTH_URL is auth's Service.
	authURL, _ := envVar(onlyContainer(t, m.workload(t, "gateway")), "AUTH_URL")
	u, err := url.Parse(authURL.Value)
	if err != nil || u.Scheme != "http" {
		t.Fatalf("gateway AUTH_URL = %q", authURL.Value)
	}
	svc, ok := serviceByName(m, u.Hostname())
	if !ok || !selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, m.workload(t, "auth").pod.Labels) {
		t.Errorf("gateway AUTH_URL %q: no Service %q selecting auth", authURL.Value, u.Hostname())
	} else if !slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return strconv.Itoa(int(p.Port)) == u.Port() }) {
		t.Errorf("gateway AUTH_URL %q: Service %s has no port %s", authURL.Value, svc.Name, u.Port())
	}
}

func checkImage(t testing.TB, c *corev1.Container) {
	t.Helper()
	_, tag, ok := strings.Cut(path.Base(c.Image), ":")
	if !ok || tag == "" || tag == "latest" {
		t.Errorf("image %q: pin a version tag", c.Image)
	}
}

func serviceByName(m *manifests, name string) (*corev1.Service, bool) {
	for _, s := range m.services {
		if s.Name == name {
			return s, true
		}
	}
	return nil, false
}

// checkNATSURL wants every URL to name a NATS pod through the headless
// Service (nats-N.nats) or a Service of the NATS pods, on the client port.
func checkNATSURL(t testing.TB, m *manifests, value string) {
	t.Helper()
	sts := m.statefulSets[0]
	nats := onlyContainer(t, m.workload(t, sts.Name))
	client, ok := containerPort(nats, intstr.FromString("client"))
	if !ok {
		t.Fatal("nats container has no port named client")
	}
	hosts := map[string]bool{}
	for i := range int(*sts.Spec.Replicas) {
		hosts[fmt.Sprintf("%s-%d.%s", sts.Name, i, sts.Spec.ServiceName)] = true
	}
	for _, s := range m.services {
		if len(s.Spec.Selector) > 0 && selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, sts.Spec.Template.Labels) {
			hosts[s.Name] = true
		}
	}
	if value == "" {
		t.Error("NATS_URL not set")
	}
	for _, raw := range strings.Split(value, ",") {
		u, err := url.Parse(raw)
		if err != nil || u.Scheme != "nats" {
			t.Errorf("NATS_URL %q: want nats://host:port", raw)
			continue
		}
		if !hosts[u.Hostname()] {
			t.Errorf("NATS_URL %q: host is not a NATS pod or Service %v", raw, slices.Sorted(maps.Keys(hosts)))
		}
		if u.Port() != strconv.Itoa(int(client.ContainerPort)) {
			t.Errorf("NATS_URL %q: want the client port %d", raw, client.ContainerPort)
		}
	}
}

// flagDefinitions are config.Set's methods that define one setting; their
// third argument is the environment variable.
var flagDefinitions = map[string]bool{"String": true, "Int": true, "Duration": true, "Bool": true, "Float": true}

// serviceEnv is every environment variable a service reads: the literal
// third argument of each flag definition in ../<svc>/*.go
// (fs.String(&x, "flag-name", "ENV_NAME", ...)), plus those of the
// config.Set helpers it calls (fs.Base, fs.Replicas, ...), found the same
// way in ../services/config/config.go.
func serviceEnv(t testing.TB, svc string) map[string]bool {
	t.Helper()
	fset := token.NewFileSet()
	cfg, err := parser.ParseFile(fset, filepath.Join("..", "services", "config", "config.go"), nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	helpers := map[string][]string{} // method of *Set -> the variables it defines
	for _, decl := range cfg.Decls {
		fn, ok := decl.(*ast.FuncDecl)
		if !ok || fn.Recv == nil || fn.Body == nil || flagDefinitions[fn.Name.Name] {
			continue
		}
		helpers[fn.Name.Name] = envLiterals(fn.Body)
	}
	files, err := filepath.Glob(filepath.Join("..", svc, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in ../%s: %v", svc, err)
	}
	reads := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		file, err := parser.ParseFile(fset, f, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range envLiterals(file) {
			reads[v] = true
		}
		ast.Inspect(file, func(n ast.Node) bool {
			if call, ok := n.(*ast.CallExpr); ok {
				if sel, ok := call.Fun.(*ast.SelectorExpr); ok {
					for _, v := range helpers[sel.Sel.Name] {
						reads[v] = true
					}
				}
			}
			return true
		})
	}
	if len(reads) == 0 {
		t.Fatalf("found no settings in ../%s", svc)
	}
	return reads
}

// envLiterals are the variable names given to flag definitions under n.
func envLiterals(n ast.Node) []string {
	var vars []string
	ast.Inspect(n, func(n ast.Node) bool {
		call, ok := n.(*ast.CallExpr)
		if !ok || len(call.Args) < 3 {
			return true
		}
		sel, ok := call.Fun.(*ast.SelectorExpr)
		if !ok || !flagDefinitions[sel.Sel.Name] {
			return true
		}
		if lit, ok := call.Args[2].(*ast.BasicLit); ok && lit.Kind == token.STRING {
			if v, err := strconv.Unquote(lit.Value); err == nil && v != "" {
				vars = append(vars, v)
			}
		}
		return true
	})
	return vars
}

// TestPodSecurity wants every pod to pass the "restricted" Pod Security
// Standard the namespace enforces, with a read-only root filesystem and no
// service account token besides.
func TestPodSecurity(t *testing.T) {
	m := loadManifests(t)
	for _, w := range m.workloads() {
		t.Run(w.name, func(t *testing.T) {
			ps := w.pod.Spec.SecurityContext
			if ps == nil {
				ps = &corev1.PodSecurityContext{}
			}
			if w.pod.Spec.AutomountServiceAccountToken == nil || *w.pod.Spec.AutomountServiceAccountToken {
				t.Error("automountServiceAccountToken: want false (natter never calls the Kubernetes API)")
			}
			if w.pod.Spec.HostNetwork || w.pod.Spec.HostPID || w.pod.Spec.HostIPC {
				t.Error("host namespaces")
			}
			for _, c := range append(slices.Clone(w.pod.Spec.InitContainers), w.pod.Spec.Containers...) {
				cs := c.SecurityContext
				if cs == nil {
					t.Errorf("container %s: no securityContext", c.Name)
					continue
				}
				nonRoot := cs.RunAsNonRoot
				if nonRoot == nil {
					nonRoot = ps.RunAsNonRoot
				}
				if nonRoot == nil || !*nonRoot {
					t.Errorf("container %s: runAsNonRoot is not true", c.Name)
				}
				for _, uid := range []*int64{cs.RunAsUser, ps.RunAsUser} {
					if uid != nil && *uid == 0 {
						t.Errorf("container %s: runs as uid 0", c.Name)
					}
				}
				seccomp := cs.SeccompProfile
				if seccomp == nil {
					seccomp = ps.SeccompProfile
				}
				if seccomp == nil || seccomp.Type != corev1.SeccompProfileTypeRuntimeDefault {
					t.Errorf("container %s: seccompProfile is not RuntimeDefault", c.Name)
				}
				if cs.AllowPrivilegeEscalation == nil || *cs.AllowPrivilegeEscalation {
					t.Errorf("container %s: allowPrivilegeEscalation is not false", c.Name)
				}
				if cs.Privileged != nil && *cs.Privileged {
					t.Errorf("container %s: privileged", c.Name)
				}
				if cs.ReadOnlyRootFilesystem == nil || !*cs.ReadOnlyRootFilesystem {
					t.Errorf("container %s: readOnlyRootFilesystem is not true", c.Name)
				}
				if cs.Capabilities == nil || !slices.Equal(cs.Capabilities.Drop, []corev1.Capability{"ALL"}) || len(cs.Capabilities.Add) > 0 {
					t.Errorf("container %s: capabilities %+v, want drop [ALL] and no add", c.Name, cs.Capabilities)
				}
			}
		})
	}
}

// TestDisruptionBudgets wants each workload covered by exactly one PDB
// that covers nothing else.
func TestDisruptionBudgets(t *testing.T) {
	m := loadManifests(t)
	ws := m.workloads()
	for _, w := range ws {
		var covering []string
		for _, p := range m.pdbs {
			if p.Spec.Selector != nil && selects(t, p.Spec.Selector, w.pod.Labels) {
				covering = append(covering, p.Name)
			}
		}
		if len(covering) != 1 {
			t.Errorf("%s %s: covered by PDBs %v, want exactly one", w.kind, w.name, covering)
		}
	}
	for _, p := range m.pdbs {
		if p.Spec.Selector == nil || len(p.Spec.Selector.MatchLabels)+len(p.Spec.Selector.MatchExpressions) == 0 {
			t.Errorf("PDB %s: empty selector covers every pod", p.Name)
			continue
		}
		n := 0
		for _, w := range ws {
			if selects(t, p.Spec.Selector, w.pod.Labels) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("PDB %s covers %d workloads, want 1", p.Name, n)
		}
		switch {
		case p.Spec.MinAvailable != nil && p.Spec.MaxUnavailable != nil:
			t.Errorf("PDB %s: both minAvailable and maxUnavailable", p.Name)
		case p.Spec.MinAvailable == nil && p.Spec.MaxUnavailable == nil:
			t.Errorf("PDB %s: neither minAvailable nor maxUnavailable", p.Name)
		}
	}
}

// TestServices wants every Service to select some workload's pods, on
// ports those pods have.
func TestServices(t *testing.T) {
	m := loadManifests(t)
	for _, s := range m.services {
		t.Run(s.Name, func(t *testing.T) {
			if len(s.Spec.Selector) == 0 {
				t.Fatal("no selector")
			}
			var selected []workload
			for _, w := range m.workloads() {
				if selects(t, &metav1.LabelSelector{MatchLabels: s.Spec.Selector}, w.pod.Labels) {
					selected = append(selected, w)
				}
			}
			if len(selected) != 1 {
				t.Fatalf("selects %d workloads, want 1", len(selected))
			}
			c := onlyContainer(t, selected[0])
			for _, p := range s.Spec.Ports {
				target := p.TargetPort
				if target.Type == intstr.Int && target.IntVal == 0 {
					target = intstr.FromInt32(p.Port)
				}
				if _, ok := containerPort(c, target); !ok {
					t.Errorf("port %s: targetPort %s is not a port of %s", p.Name, target.String(), selected[0].name)
				}
			}
		})
	}
}

// natsConf is deploy/nats/nats.conf and what it includes, without
// comments or quoted strings.
func natsConf(t testing.TB) (main string, all string) {
	t.Helper()
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join("nats", name))
		if err != nil {
			t.Fatal(err)
		}
		return stripConf(string(data))
	}
	main = read("nats.conf")
	all = main
	for _, inc := range regexp.MustCompile(`(?m)^\s*include\s+(\S+)`).FindAllStringSubmatch(main, -1) {
		all += "\n" + read(inc[1])
	}
	return main, all
}

var (
	confQuoted  = regexp.MustCompile(`"[^"\n]*"`)
	confComment = regexp.MustCompile(`(?m)#.*$`)
)

// stripConf drops quoted strings first, so a "#" or "$" inside one counts
// for nothing.
func stripConf(s string) string {
	return confComment.ReplaceAllString(confQuoted.ReplaceAllString(s, `""`), "")
}

func confValue(t testing.TB, conf, re string) string {
	t.Helper()
	m := regexp.MustCompile(re).FindStringSubmatch(conf)
	if m == nil {
		t.Fatalf("nats.conf: no match for %s", re)
	}
	return m[1]
}

func TestNATS(t *testing.T) {
	m := loadManifests(t)
	k, _ := loadKustomization(t)
	if len(m.statefulSets) != 1 {
		t.Fatalf("%d StatefulSets, want 1", len(m.statefulSets))
	}
	sts := m.statefulSets[0]
	w := m.workload(t, sts.Name)
	c := onlyContainer(t, w)
	conf, confAll := natsConf(t)

	if sts.Spec.Replicas == nil || *sts.Spec.Replicas != 3 {
		t.Errorf("replicas = %v, want 3 (R3 streams)", sts.Spec.Replicas)
	}
	if !selects(t, sts.Spec.Selector, sts.Spec.Template.Labels) {
		t.Error("selector does not match the pod labels")
	}
	if sts.Spec.PodManagementPolicy != appsv1.ParallelPodManagement {
		t.Error("podManagementPolicy: want Parallel (nodes wait for each other's quorum at start)")
	}

	// The headless Service that gives the pods the names the routes use.
	svc, ok := serviceByName(m, sts.Spec.ServiceName)
	if sts.Spec.ServiceName != "nats" || !ok {
		t.Fatalf("serviceName %q: want a Service \"nats\"", sts.Spec.ServiceName)
	}
	if svc.Spec.ClusterIP != corev1.ClusterIPNone {
		t.Errorf("Service %s: clusterIP %q, want None (headless)", svc.Name, svc.Spec.ClusterIP)
	}
	if !svc.Spec.PublishNotReadyAddresses {
		t.Errorf("Service %s: publishNotReadyAddresses: want true (routes resolve before the nodes are ready)", svc.Name)
	}
	if !selects(t, &metav1.LabelSelector{MatchLabels: svc.Spec.Selector}, sts.Spec.Template.Labels) {
		t.Errorf("Service %s does not select the NATS pods", svc.Name)
	}

	// Ports: the configuration's listeners are the container's ports.
	for _, p := range []struct{ name, re string }{
		{"client", `(?m)^listen:\s*\S*:(\d+)`},
		{"monitor", `(?m)^http:\s*\S*:(\d+)`},
		{"cluster", `(?s)cluster\s*\{.*?listen:\s*\S*:(\d+)`},
	} {
		want := confValue(t, conf, p.re)
		if cp, ok := containerPort(c, intstr.FromString(p.name)); !ok || strconv.Itoa(int(cp.ContainerPort)) != want {
			t.Errorf("container port %s = %d, nats.conf listens on %s", p.name, cp.ContainerPort, want)
		}
	}
	// Routes: nats-N.nats for each pod of the StatefulSet, on the cluster port.
	cluster, _ := containerPort(c, intstr.FromString("cluster"))
	var routes, want []string
	for _, r := range regexp.MustCompile(`nats://([^\s,\]]+)`).FindAllStringSubmatch(conf, -1) {
		routes = append(routes, r[1])
	}
	for i := range int(*sts.Spec.Replicas) {
		want = append(want, fmt.Sprintf("%s-%d.%s:%d", sts.Name, i, svc.Name, cluster.ContainerPort))
	}
	if !slices.Equal(routes, want) {
		t.Errorf("nats.conf routes %v, want the pods %v", routes, want)
	}

	// Configuration: the generated ConfigMap, mounted where -c points,
	// with every file nats.conf includes beside it.
	files := generatedFiles(t, k, natsConfigMap)
	var confDir string
	for _, vm := range c.VolumeMounts {
		for _, v := range w.pod.Spec.Volumes {
			if v.Name == vm.Name && v.ConfigMap != nil && v.ConfigMap.Name == natsConfigMap {
				confDir = vm.MountPath
			}
		}
	}
	if confDir == "" {
		t.Fatalf("ConfigMap %s not mounted", natsConfigMap)
	}
	args := append(slices.Clone(c.Command), c.Args...)
	i := slices.Index(args, "-c")
	if i < 0 || i+1 >= len(args) || path.Dir(args[i+1]) != confDir || files[path.Base(args[i+1])] == "" {
		t.Errorf("command %v: want -c %s/<a file of %s>", args, confDir, natsConfigMap)
	}
	for _, inc := range regexp.MustCompile(`(?m)^\s*include\s+(\S+)`).FindAllStringSubmatch(conf, -1) {
		if files[inc[1]] == "" {
			t.Errorf("nats.conf includes %s, which %s lacks", inc[1], natsConfigMap)
		}
	}

	// JetStream: store_dir on the per-pod volume.
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		t.Fatal("no volumeClaimTemplates")
	}
	storeDir := confValue(t, conf, `store_dir:\s*(\S+)`)
	onVolume := false
	for _, vm := range c.VolumeMounts {
		for _, pvc := range sts.Spec.VolumeClaimTemplates {
			if vm.Name == pvc.Name && (storeDir == vm.MountPath || strings.HasPrefix(storeDir, vm.MountPath+"/")) {
				onVolume = true
				if q := pvc.Spec.Resources.Requests[corev1.ResourceStorage]; q.IsZero() {
					t.Errorf("volumeClaimTemplate %s: no storage request", pvc.Name)
				}
			}
		}
	}
	if !onVolume {
		t.Errorf("store_dir %s is not on a volumeClaimTemplate's volume", storeDir)
	}

	// Environment: exactly the variables the configuration refers to.
	defined := map[string]bool{}
	for _, d := range regexp.MustCompile(`(?m)^\s*([A-Za-z_]\w*)\s*=`).FindAllStringSubmatch(confAll, -1) {
		defined[d[1]] = true
	}
	refs := map[string]bool{}
	for _, r := range regexp.MustCompile(`\$([A-Za-z_]\w*)`).FindAllStringSubmatch(confAll, -1) {
		if !defined[r[1]] {
			refs[r[1]] = true
		}
	}
	for name := range refs {
		if _, ok := envVar(c, name); !ok {
			t.Errorf("the configuration refers to $%s, which the container does not set", name)
		}
	}
	for _, e := range c.Env {
		if !refs[e.Name] {
			t.Errorf("env %s: the configuration does not use it", e.Name)
		}
	}
	if e, _ := envVar(c, "SERVER_NAME"); e.ValueFrom == nil || e.ValueFrom.FieldRef == nil || e.ValueFrom.FieldRef.FieldPath != "metadata.name" {
		t.Error("SERVER_NAME: want the pod name (fieldRef metadata.name)")
	}

	// Stopping: lame duck mode, with time to finish it.
	if pre := c.Lifecycle; pre == nil || pre.PreStop == nil || pre.PreStop.Exec == nil ||
		!strings.Contains(strings.Join(pre.PreStop.Exec.Command, " "), "--signal ldm") {
		t.Error("preStop: want nats-server --signal ldm (lame duck mode)")
	}
	var ldm time.Duration
	for _, key := range []string{"lame_duck_duration", "lame_duck_grace_period"} {
		d, err := time.ParseDuration(confValue(t, conf, key+`:\s*(\S+)`))
		if err != nil {
			t.Fatal(err)
		}
		ldm += d
	}
	grace := 30 * time.Second // Kubernetes' default
	if g := sts.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if grace < ldm+10*time.Second {
		t.Errorf("terminationGracePeriodSeconds = %s, want at least lame duck mode's %s + 10s", grace, ldm)
	}

	// Probes on the monitoring port's /healthz.
	for _, p := range []struct {
		kind  string
		probe *corev1.Probe
	}{{"startupProbe", c.StartupProbe}, {"readinessProbe", c.ReadinessProbe}, {"livenessProbe", c.LivenessProbe}} {
		if p.probe == nil || p.probe.HTTPGet == nil || !strings.HasPrefix(p.probe.HTTPGet.Path, "/healthz") {
			t.Errorf("%s: want httpGet /healthz", p.kind)
			continue
		}
		if cp, _ := containerPort(c, p.probe.HTTPGet.Port); cp.Name != "monitor" {
			t.Errorf("%s: port %s, want the monitoring port", p.kind, p.probe.HTTPGet.Port.String())
		}
	}

	// One node per machine.
	aff := w.pod.Spec.Affinity
	if aff == nil || aff.PodAntiAffinity == nil || !slices.ContainsFunc(aff.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution,
		func(term corev1.PodAffinityTerm) bool {
			return term.TopologyKey == "kubernetes.io/hostname" && selects(t, term.LabelSelector, w.pod.Labels)
		}) {
		t.Error("want required pod anti-affinity of the NATS pods on kubernetes.io/hostname")
	}
	for _, r := range []corev1.ResourceName{corev1.ResourceCPU, corev1.ResourceMemory} {
		if _, ok := c.Resources.Requests[r]; !ok {
			t.Errorf("no %s request", r)
		}
	}
	if _, ok := c.Resources.Limits[corev1.ResourceMemory]; !ok {
		t.Error("no memory limit")
	}
	checkImage(t, c)
}

// TestSecretReferences wants every secret, key and ConfigMap a pod or the
// Ingress refers to be one the operator is told to create (with the key
// in its kubectl command) or kustomization.yaml generates.
func TestSecretReferences(t *testing.T) {
	m := loadManifests(t)
	k, text := loadKustomization(t)
	type ref struct{ secret, key string }
	var refs []ref
	configMaps := map[string]bool{}
	for _, w := range m.workloads() {
		spec := w.pod.Spec
		for _, c := range append(slices.Clone(spec.InitContainers), spec.Containers...) {
			for _, e := range c.Env {
				if e.ValueFrom == nil {
					continue
				}
				if r := e.ValueFrom.SecretKeyRef; r != nil {
					refs = append(refs, ref{r.Name, r.Key})
				}
				if r := e.ValueFrom.ConfigMapKeyRef; r != nil {
					configMaps[r.Name] = true
				}
			}
			for _, e := range c.EnvFrom {
				if e.SecretRef != nil {
					refs = append(refs, ref{e.SecretRef.Name, ""})
				}
				if e.ConfigMapRef != nil {
					configMaps[e.ConfigMapRef.Name] = true
				}
			}
		}
		for _, v := range spec.Volumes {
			switch {
			case v.Secret != nil:
				if len(v.Secret.Items) == 0 {
					refs = append(refs, ref{v.Secret.SecretName, ""})
				}
				for _, it := range v.Secret.Items {
					refs = append(refs, ref{v.Secret.SecretName, it.Key})
				}
			case v.ConfigMap != nil:
				configMaps[v.ConfigMap.Name] = true
			case v.Projected != nil:
				t.Errorf("%s: projected volume %s: not checked here", w.name, v.Name)
			}
		}
	}
	for _, ing := range m.ingresses {
		for _, tls := range ing.Spec.TLS {
			refs = append(refs, ref{tls.SecretName, "tls.crt"}, ref{tls.SecretName, "tls.key"})
		}
	}
	if len(refs) == 0 {
		t.Fatal("no secret references found")
	}
	for _, r := range refs {
		keys, ok := documentedSecrets[r.secret]
		switch {
		case !ok:
			t.Errorf("secret %q is not one of the documented secrets", r.secret)
		case r.key == "":
			t.Errorf("secret %s: refer to its keys one by one", r.secret)
		case !slices.Contains(keys, r.key):
			t.Errorf("secret %s has no documented key %q", r.secret, r.key)
		case strings.HasPrefix(r.key, "tls."):
			if !strings.Contains(text, "create secret tls "+r.secret) {
				t.Errorf("kustomization.yaml does not say how to create TLS secret %s", r.secret)
			}
		default:
			if !strings.Contains(text, "create secret generic "+r.secret) ||
				(!strings.Contains(text, "--from-literal="+r.key+"=") && !strings.Contains(text, "--from-file="+r.key+"=")) {
				t.Errorf("kustomization.yaml's commands do not create secret %s with key %s", r.secret, r.key)
			}
		}
	}
	for name := range configMaps {
		if name != natsConfigMap {
			t.Errorf("ConfigMap %q is not generated by kustomization.yaml", name)
		}
	}
	generatedFiles(t, k, natsConfigMap)
}

// podPeer is a pod that may try to connect: its namespace's labels and
// its own.
type podPeer struct {
	name            string
	nsLabels, label map[string]string
}

// ingressAllowed reports whether the network policies let from connect to
// port on the pods labelled to (whose container is c). A pod no policy
// selects for ingress accepts anything.
func ingressAllowed(t testing.TB, pols []*networkingv1.NetworkPolicy, from podPeer, to map[string]string, c *corev1.Container, port int32) bool {
	t.Helper()
	isolated := false
	for _, p := range pols {
		if !slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) || !selects(t, &p.Spec.PodSelector, to) {
			continue
		}
		isolated = true
		for _, rule := range p.Spec.Ingress {
			if ruleAllows(t, rule, from, c, port) {
				return true
			}
		}
	}
	return !isolated
}

func ruleAllows(t testing.TB, rule networkingv1.NetworkPolicyIngressRule, from podPeer, c *corev1.Container, port int32) bool {
	t.Helper()
	portOK := len(rule.Ports) == 0
	for _, p := range rule.Ports {
		if p.Protocol != nil && *p.Protocol != corev1.ProtocolTCP {
			continue
		}
		switch {
		case p.Port == nil:
			portOK = true
		case p.EndPort != nil && p.Port.Type == intstr.Int:
			portOK = portOK || (p.Port.IntVal <= port && port <= *p.EndPort)
		default:
			cp, ok := containerPort(c, *p.Port)
			portOK = portOK || (ok && cp.ContainerPort == port) || (p.Port.Type == intstr.Int && p.Port.IntVal == port)
		}
	}
	if !portOK {
		return false
	}
	if len(rule.From) == 0 {
		return true
	}
	for _, peer := range rule.From {
		if peer.IPBlock != nil {
			return true // some address range: assume it may contain the pod
		}
		nsOK := peer.NamespaceSelector == nil && from.nsLabels["kubernetes.io/metadata.name"] == k8sNamespace ||
			peer.NamespaceSelector != nil && selects(t, peer.NamespaceSelector, from.nsLabels)
		podOK := peer.PodSelector == nil || selects(t, peer.PodSelector, from.label)
		if nsOK && podOK {
			return true
		}
	}
	return false
}

// TestNetworkPolicies checks who may reach the NATS ports and natter's
// own flows: the cluster port only from NATS nodes (routes have no
// password), the client port only from natter's services, the monitoring
// port from no pod.
func TestNetworkPolicies(t *testing.T) {
	m := loadManifests(t)
	natter := map[string]string{"kubernetes.io/metadata.name": k8sNamespace}
	other := map[string]string{"kubernetes.io/metadata.name": "elsewhere"}
	pods := map[string]podPeer{}
	for _, w := range m.workloads() {
		pods[w.name] = podPeer{w.name, natter, w.pod.Labels}
	}
	// Pods that are none of natter's: another pod in the namespace (a
	// debugging shell), and the same pods' labels in another namespace.
	strangers := []podPeer{
		{"unlabelled pod", natter, map[string]string{}},
		{"other pod", natter, map[string]string{"app.kubernetes.io/name": "debug"}},
		{"nats-labelled pod elsewhere", other, pods["nats"].label},
		{"gateway-labelled pod elsewhere", other, pods["gateway"].label},
	}

	hasDefaultDeny := false
	for _, p := range m.netpols {
		if len(p.Spec.PodSelector.MatchLabels)+len(p.Spec.PodSelector.MatchExpressions) == 0 &&
			slices.Contains(p.Spec.PolicyTypes, networkingv1.PolicyTypeIngress) && len(p.Spec.Ingress) == 0 {
			hasDefaultDeny = true
		}
	}
	if !hasDefaultDeny {
		t.Error("no default-deny ingress policy for the namespace")
	}

	tests := []struct {
		to      string
		port    int32
		allowed []string // of natter's pods; every other pod is refused
	}{
		{"nats", 6222, []string{"nats"}},
		{"nats", 4222, []string{"gateway", "auth", "presence"}},
		{"nats", 8222, nil},
		{"auth", 8081, []string{"gateway"}},
		{"presence", 8082, nil},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s:%d", tt.to, tt.port), func(t *testing.T) {
			target := m.workload(t, tt.to)
			c := onlyContainer(t, target)
			for name, from := range pods {
				want := slices.Contains(tt.allowed, name)
				if got := ingressAllowed(t, m.netpols, from, target.pod.Labels, c, tt.port); got != want {
					t.Errorf("from %s: allowed = %v, want %v", name, got, want)
				}
			}
			for _, from := range strangers {
				if ingressAllowed(t, m.netpols, from, target.pod.Labels, c, tt.port) {
					t.Errorf("from %s: allowed", from.name)
				}
			}
		})
	}

	// The gateway is reachable from outside the namespace (the Ingress
	// controller), and from none of natter's own pods.
	gw := m.workload(t, "gateway")
	reachable := false
	for _, p := range m.netpols {
		if selects(t, &p.Spec.PodSelector, gw.pod.Labels) {
			for _, r := range p.Spec.Ingress {
				for _, peer := range r.From {
					reachable = reachable || peer.NamespaceSelector != nil
				}
			}
		}
	}
	if !reachable {
		t.Error("gateway: no rule lets the Ingress controller in")
	}
}

// webFiles are the files the gateway embeds (its //go:embed line).
func webFiles(t testing.TB) []string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join("..", "gateway", "web", "web.go"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^//go:embed\s+(.+)$`).FindSubmatch(data)
	if m == nil {
		t.Fatal("../gateway/web/web.go: no //go:embed line")
	}
	return strings.Fields(string(m[1]))
}

// TestIngress wants the Ingress to route the page, its assets, /api/ and
// /ws to the gateway, and nothing else (the gateway's /metrics, /healthz,
// /readyz stay inside), over TLS, on the host the gateway accepts as an
// Origin.
func TestIngress(t *testing.T) {
	m := loadManifests(t)
	if len(m.ingresses) != 1 {
		t.Fatalf("%d Ingresses, want 1", len(m.ingresses))
	}
	ing := m.ingresses[0]
	gw := onlyContainer(t, m.workload(t, "gateway"))
	origins, _ := envVar(gw, "ALLOWED_ORIGINS")
	for _, a := range []string{"proxy-read-timeout", "proxy-send-timeout"} {
		if v, _ := strconv.Atoi(ing.Annotations["nginx.ingress.kubernetes.io/"+a]); v < 3600 {
			t.Errorf("annotation %s = %q: websockets need an hour or so", a, ing.Annotations["nginx.ingress.kubernetes.io/"+a])
		}
	}
	want := map[string]networkingv1.PathType{"/": networkingv1.PathTypeExact, "/api/": networkingv1.PathTypePrefix, "/ws": networkingv1.PathTypeExact}
	for _, f := range webFiles(t) {
		if f != "index.html" {
			want["/"+f] = networkingv1.PathTypeExact
		}
	}
	if len(ing.Spec.Rules) == 0 {
		t.Fatal("no rules")
	}
	for _, rule := range ing.Spec.Rules {
		if rule.Host == "" {
			t.Error("a rule without host")
		}
		if !slices.ContainsFunc(ing.Spec.TLS, func(tls networkingv1.IngressTLS) bool { return slices.Contains(tls.Hosts, rule.Host) }) {
			t.Errorf("host %s: not in tls", rule.Host)
		}
		if !slices.Contains(strings.Split(origins.Value, ","), "https://"+rule.Host) {
			t.Errorf("host %s: gateway ALLOWED_ORIGINS %q lacks https://%s", rule.Host, origins.Value, rule.Host)
		}
		if rule.HTTP == nil {
			t.Fatalf("host %s: no paths", rule.Host)
		}
		got := map[string]networkingv1.PathType{}
		for _, p := range rule.HTTP.Paths {
			if p.PathType == nil {
				t.Errorf("path %s: no pathType", p.Path)
				continue
			}
			got[p.Path] = *p.PathType
			b := p.Backend.Service
			if b == nil {
				t.Errorf("path %s: no service backend", p.Path)
				continue
			}
			svc, ok := serviceByName(m, b.Name)
			if !ok || b.Name != "gateway" {
				t.Errorf("path %s: backend %s, want the gateway Service", p.Path, b.Name)
				continue
			}
			if !slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
				return (b.Port.Name != "" && sp.Name == b.Port.Name) || (b.Port.Number != 0 && sp.Port == b.Port.Number)
			}) {
				t.Errorf("path %s: Service %s has no port %+v", p.Path, b.Name, b.Port)
			}
		}
		for p, pt := range want {
			if got[p] != pt {
				t.Errorf("host %s: path %s is %q, want %s", rule.Host, p, got[p], pt)
			}
		}
		for p := range got {
			if _, ok := want[p]; !ok {
				t.Errorf("host %s: path %s routes more than the page, /api/ and /ws", rule.Host, p)
			}
		}
	}
}

func TestHorizontalPodAutoscalers(t *testing.T) {
	m := loadManifests(t)
	for _, h := range m.hpas {
		t.Run(h.Name, func(t *testing.T) {
			ref := h.Spec.ScaleTargetRef
			if ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" {
				t.Fatalf("scaleTargetRef %+v: want an apps/v1 Deployment", ref)
			}
			d := m.deployment(t, ref.Name)
			c := onlyContainer(t, m.workload(t, d.Name))
			if h.Spec.MinReplicas == nil || *h.Spec.MinReplicas < 2 || h.Spec.MaxReplicas < *h.Spec.MinReplicas {
				t.Errorf("min/max replicas %v/%d", h.Spec.MinReplicas, h.Spec.MaxReplicas)
			}
			for _, mt := range h.Spec.Metrics {
				if mt.Resource != nil && mt.Resource.Target.Type == autoscalingv2.UtilizationMetricType {
					if _, ok := c.Resources.Requests[mt.Resource.Name]; !ok {
						t.Errorf("%s utilization target without a %s request", mt.Resource.Name, mt.Resource.Name)
					}
				}
			}
		})
	}
}

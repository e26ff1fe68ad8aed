package lifecycle_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/broker/config"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// The simulated kubelet's volumes: every Secret, ConfigMap and projected volume of a
// pod is written under the slot's root directory at its mount path, the way the
// kubelet does it (AtomicWriter: a symlink swap), and kept up to date while the
// container runs, so mqttd sees a Secret or ConfigMap change exactly as in a pod,
// without a restart. The data volume is the slot's dataDir (--store.dir).

// volumeSyncPeriod is how often a running pod's volumes are refreshed: the kubelet's
// sync (a minute or so in a cluster) compressed.
const volumeSyncPeriod = time.Second

// volumeObjects caches, for one tick, the data of the Secrets and ConfigMaps that
// pods mount (nil data: the object does not exist).
type volumeObjects map[string]map[string][]byte

// data returns the keys of the Secret or ConfigMap kind/name; nil when it is missing.
func (s *simulator) volumeData(ctx context.Context, kind, name string) (map[string][]byte, error) {
	key := kind + "/" + name
	if d, ok := s.volumeCache[key]; ok {
		return d, nil
	}
	var data map[string][]byte
	switch kind {
	case "Secret":
		sec := &corev1.Secret{}
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, sec)
		if client.IgnoreNotFound(err) != nil {
			return nil, err
		}
		if err == nil {
			data = maps.Clone(sec.Data)
			if data == nil {
				data = map[string][]byte{}
			}
		}
	case "ConfigMap":
		cm := &corev1.ConfigMap{}
		err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, cm)
		if client.IgnoreNotFound(err) != nil {
			return nil, err
		}
		if err == nil {
			data = maps.Clone(cm.BinaryData)
			if data == nil {
				data = map[string][]byte{}
			}
			for k, v := range cm.Data {
				data[k] = []byte(v)
			}
		}
	}
	s.volumeCache[key] = data
	return data, nil
}

// project picks the files of one Secret or ConfigMap as the volume's items say (all
// keys without items); false when the object or a listed key is missing.
func project(data map[string][]byte, items []corev1.KeyToPath, optional bool, into map[string][]byte) bool {
	if data == nil {
		return optional
	}
	if len(items) == 0 {
		maps.Copy(into, data)
		return true
	}
	for _, it := range items {
		v, ok := data[it.Key]
		if !ok {
			if optional {
				continue
			}
			return false
		}
		into[it.Path] = v
	}
	return true
}

// volumeFiles returns the files of a Secret, ConfigMap or projected volume; false
// while something it needs does not exist (the kubelet keeps the pod in
// ContainerCreating).
func (s *simulator) volumeFiles(ctx context.Context, v corev1.Volume) (map[string][]byte, bool, error) {
	files := map[string][]byte{}
	type source struct {
		kind, name string
		items      []corev1.KeyToPath
		optional   *bool
	}
	var sources []source
	switch {
	case v.Secret != nil:
		sources = append(sources, source{"Secret", v.Secret.SecretName, v.Secret.Items, v.Secret.Optional})
	case v.ConfigMap != nil:
		sources = append(sources, source{"ConfigMap", v.ConfigMap.Name, v.ConfigMap.Items, v.ConfigMap.Optional})
	case v.Projected != nil:
		for _, p := range v.Projected.Sources {
			switch {
			case p.Secret != nil:
				sources = append(sources, source{"Secret", p.Secret.Name, p.Secret.Items, p.Secret.Optional})
			case p.ConfigMap != nil:
				sources = append(sources, source{"ConfigMap", p.ConfigMap.Name, p.ConfigMap.Items, p.ConfigMap.Optional})
			default:
				return nil, false, fmt.Errorf("volume %s: a projection the simulator does not know", v.Name)
			}
		}
	default:
		return nil, false, fmt.Errorf("volume %s: a kind the simulator does not know", v.Name)
	}
	for _, src := range sources {
		data, err := s.volumeData(ctx, src.kind, src.name)
		if err != nil {
			return nil, false, err
		}
		if !project(data, src.items, src.optional != nil && *src.optional, files) {
			return nil, false, nil
		}
	}
	return files, true, nil
}

// mountVolumes writes (or refreshes) the pod's volumes under the slot's root; false
// while one cannot be mounted yet (lock held). A running container's volumes are
// refreshed every volumeSyncPeriod.
func (s *simulator) mountVolumes(ctx context.Context, sl *slot, pod *corev1.Pod) (bool, error) {
	if sl.proc != nil && time.Since(sl.volumesAt) < volumeSyncPeriod {
		return true, nil
	}
	volumes := map[string]corev1.Volume{}
	for _, v := range pod.Spec.Volumes {
		volumes[v.Name] = v
	}
	for _, m := range pod.Spec.Containers[0].VolumeMounts {
		v, ok := volumes[m.Name]
		if !ok {
			return false, fmt.Errorf("pod %s mounts %s, which it does not have", pod.Name, m.Name)
		}
		if v.PersistentVolumeClaim != nil {
			continue // the slot's dataDir
		}
		if m.SubPath != "" || m.SubPathExpr != "" {
			// The kubelet never updates a subPath mount: mqttd would not see changes.
			return false, fmt.Errorf("pod %s mounts %s with subPath, which the simulator does not support", pod.Name, m.Name)
		}
		files, ok, err := s.volumeFiles(ctx, v)
		if err != nil || !ok {
			return false, err
		}
		changed, err := atomicWrite(filepath.Join(sl.root, m.MountPath), files)
		if err != nil {
			return false, err
		}
		if changed && sl.proc != nil {
			sl.logs.Add(fmt.Sprintf("=== %s: the kubelet updated volume %s at %s", time.Now().Format(time.TimeOnly), m.Name, m.MountPath))
		}
	}
	sl.volumesAt = time.Now()
	return true, nil
}

// atomicWrite makes dir hold exactly files, as the kubelet's AtomicWriter does: the
// files live in a hidden directory, "..data" is a symlink to it, and each visible name
// is a symlink through "..data". An update writes a new hidden directory and swaps
// "..data" with one rename, so a reader sees the old set or the new one, never a mix;
// a file's own path never changes. It writes nothing when the content is the same.
func atomicWrite(dir string, files map[string][]byte) (bool, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return false, err
	}
	dataLink := filepath.Join(dir, "..data")
	if current, err := readTree(dataLink); err == nil && maps.EqualFunc(current, files, bytes.Equal) {
		return false, nil
	}
	old, _ := os.Readlink(dataLink)
	ts, err := os.MkdirTemp(dir, "..ts-")
	if err != nil {
		return false, err
	}
	for name, data := range files {
		p := filepath.Join(ts, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return false, err
		}
		if err := os.WriteFile(p, data, 0o444); err != nil {
			return false, err
		}
	}
	tmp := filepath.Join(dir, "..data_tmp")
	_ = os.Remove(tmp)
	if err := os.Symlink(filepath.Base(ts), tmp); err != nil {
		return false, err
	}
	if err := os.Rename(tmp, dataLink); err != nil {
		return false, err
	}
	visible := map[string]bool{}
	for name := range files {
		top, _, _ := strings.Cut(name, "/")
		visible[top] = true
		link := filepath.Join(dir, top)
		if _, err := os.Lstat(link); os.IsNotExist(err) {
			if err := os.Symlink(filepath.Join("..data", top), link); err != nil {
				return false, err
			}
		}
	}
	entries, err := os.ReadDir(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		if n := e.Name(); !strings.HasPrefix(n, "..") && !visible[n] {
			if err := os.Remove(filepath.Join(dir, n)); err != nil {
				return false, err
			}
		}
	}
	if old != "" {
		if err := os.RemoveAll(filepath.Join(dir, old)); err != nil {
			return false, err
		}
	}
	return true, nil
}

// readTree returns the regular files under dir (a symlink to a directory is
// followed), by path relative to it.
func readTree(dir string) (map[string][]byte, error) {
	target, err := filepath.EvalSymlinks(dir)
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	err = filepath.WalkDir(target, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(target, p)
		out[filepath.ToSlash(rel)] = data
		return err
	})
	return out, err
}

// podConfig returns the mqttd configuration the operator rendered for the pod (its
// ConfigMap as mounted), with the paths of the files mqttd re-reads moved under the
// slot's root; "" when the pod has no such ConfigMap. The process's flags still
// override what differs on a test machine (addresses, store, cookie and token).
func podConfig(sl *slot) (string, error) {
	mounted := filepath.Join(sl.root, resource.ConfigDir, resource.ConfigFile)
	if _, err := os.Stat(mounted); os.IsNotExist(err) {
		return "", nil
	}
	cfg, err := config.Load([]string{"--config", mounted}, nil, io.Discard)
	if err != nil {
		return "", fmt.Errorf("the rendered mqttd.yaml: %w", err)
	}
	l := &cfg.Listeners
	for _, p := range []*string{&cfg.Auth.UsersFile, &cfg.Auth.ACLFile, &l.MQTTSCertFile, &l.MQTTSKeyFile, &l.WSSCertFile, &l.WSSKeyFile} {
		if *p != "" {
			*p = filepath.Join(sl.root, *p)
		}
	}
	// TLS listeners on ports of this machine's choosing (startBroker reads them).
	for _, a := range []*string{&l.MQTTS, &l.WSS} {
		if *a != "" {
			*a = "127.0.0.1:0"
		}
	}
	raw, err := cfg.YAML()
	if err != nil {
		return "", err
	}
	path := filepath.Join(sl.root, "mqttd.yaml")
	return path, os.WriteFile(path, raw, 0o600)
}

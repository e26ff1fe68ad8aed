package lifecycle_test

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/controller/controllerutil"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

// Names Kubernetes' StatefulSet controller and kubelet use.
const (
	labelRevision     = appsv1.ControllerRevisionHashLabelKey // controller-revision-hash
	labelPodName      = appsv1.StatefulSetPodNameLabel        // statefulset.kubernetes.io/pod-name
	labelPodIndex     = appsv1.PodIndexLabel                  // apps.kubernetes.io/pod-index
	pvcProtection     = "kubernetes.io/pvc-protection"
	simulatedNodeName = "envtest-node" // a scheduled pod is deleted gracefully, as on a real node
)

// simulator plays, for one MQTTCluster, the parts of Kubernetes that envtest lacks:
// the StatefulSet controller (Pods and PVCs for the ordinals below spec.replicas,
// OnDelete: a running pod is never replaced by it; status with revisions), the kubelet
// (one mqttd per Pod, /readyz as the Ready condition, SIGTERM on deletion) and PVC
// protection (a claim goes only once no pod uses it; its data directory goes with it).
type simulator struct {
	ns, name string
	dir      string // data directories and the Secrets' files
	calls    *callLog

	cancel context.CancelFunc
	done   chan struct{}

	mu         sync.Mutex
	slots      map[int]*slot
	cookieFile string
	cookies    map[string][]byte // pod -> a cookie of its own, instead of the Secret's
	tokenFile  string
	token      string
	events     []podEvent // what the simulator saw and did, in order
	removals   []removal  // the state of each broker when its pod went away
	unready    unreadyWatch
	replicas   int // spec.replicas of the StatefulSet, as last seen
	lastErr    string
	// storeOutage: every container that starts finds a store it cannot open (exit code
	// 3), as in an outage of the storage under every node at once.
	storeOutage bool
	// volumeCache holds the Secrets and ConfigMaps pods mount, for one tick.
	volumeCache volumeObjects
}

// slot is one ordinal: its pod (across incarnations), process and volume.
type slot struct {
	ordinal     int
	pod         string
	clusterAddr string // fixed for the slot's life
	logs        *mqttdproc.Log
	dataDir     string    // "" until its PVC exists
	root        string    // the pod's mounted Secrets and ConfigMaps, at their paths below it
	volumesAt   time.Time // when they were last refreshed
	uid         types.UID // of the Pod the process belongs to
	proc        *broker
	proxy       *apiProxy
	stopping    chan struct{} // closed when the process being stopped has exited
	heldUID     types.UID     // the spec keeps this pod's container down
	restarts    int32
	pullFailed  bool      // the pod's image cannot be pulled (unpullableTag)
	image       string    // the pod's image
	crashed     bool      // the last process exited on its own
	crashedAt   time.Time // when
	lastExit    int32     // its exit code
	observed    types.UID // the pod incarnation whose removal was recorded
	written     string    // the pod status last written (a digest)
}

// podEvent is a pod created or deleted, as the simulator saw it.
type podEvent struct {
	at       time.Time
	kind     string // "created" or "deleted"
	pod      string
	revision string
}

// unpullableTag ends an image reference the simulated kubelet cannot pull.
const unpullableTag = ":unpullable"

// storeFailsTag ends an image reference whose mqttd cannot open the store it finds
// (exit code 3 at every start), as a bad release would.
const storeFailsTag = ":cannot-open-store"

// removal is a broker's state when its pod went away (deleted or scaled down).
type removal struct {
	pod    string
	reason string
	node   *nodeInfo // its last GET /api/v1/node; nil when it did not answer
	err    string
	// views are the remaining members' GET /api/v1/cluster, by pod.
	views map[string]*clusterView
}

// unreadyWatch records the most ordinals below spec.replicas that were at once
// without a ready, running pod, since it was last reset.
type unreadyWatch struct {
	max  int
	when []string
}

// startSimulator starts the simulator of MQTTCluster ns/name; it polls every 100 ms
// until stopped.
func startSimulator(ns, name string) *simulator {
	GinkgoHelper()
	dir, err := os.MkdirTemp(workDir, ns+"-")
	must(err, "temp dir")
	ctx, cancel := context.WithCancel(context.Background())
	s := &simulator{ns: ns, name: name, dir: dir, calls: &callLog{}, cancel: cancel, done: make(chan struct{}), slots: map[int]*slot{}}
	go func() {
		defer close(s.done)
		t := time.NewTicker(pollInterval)
		defer t.Stop()
		for {
			if err := s.tick(ctx); err != nil && ctx.Err() == nil {
				s.mu.Lock()
				s.lastErr = time.Now().Format(time.TimeOnly) + " " + err.Error()
				s.mu.Unlock()
			}
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends the simulation and kills every process.
func (s *simulator) stop() {
	s.cancel()
	<-s.done
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, sl := range s.slots {
		if sl.proc != nil {
			sl.proc.kill()
		}
		if sl.proxy != nil {
			sl.proxy.close()
		}
	}
	addresses.forget(s.ns)
}

// races returns the race detector's reports of the pods' processes (race-enabled
// builds), "" when there were none.
func (s *simulator) races() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	for _, sl := range s.slots {
		if r := sl.logs.Race(); r != "" {
			fmt.Fprintf(&b, "--- %s ---\n%s\n", sl.pod, r)
		}
	}
	return b.String()
}

func (s *simulator) tick(ctx context.Context) error {
	sts := &appsv1.StatefulSet{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, sts); err != nil {
		return client.IgnoreNotFound(err)
	}
	mc := &v1alpha1.MQTTCluster{}
	if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: s.name}, mc); err != nil {
		return client.IgnoreNotFound(err)
	}
	// The kubelet mounts the Secrets; a pod cannot start before they exist.
	if err := s.mountSecrets(ctx, mc); err != nil {
		return err
	}
	podList := &corev1.PodList{}
	if err := k8sClient.List(ctx, podList, client.InNamespace(s.ns), client.MatchingLabels(sts.Spec.Selector.MatchLabels)); err != nil {
		return err
	}
	pods := map[int]*corev1.Pod{}
	for i := range podList.Items {
		if ord, ok := ordinalOf(s.name, podList.Items[i].Name); ok && metav1.IsControlledBy(&podList.Items[i], sts) {
			pods[ord] = &podList.Items[i]
		}
	}
	replicas := int(ptr.Deref(sts.Spec.Replicas, 1))
	revision := templateRevision(sts)

	s.mu.Lock()
	defer s.mu.Unlock()
	s.replicas = replicas
	s.volumeCache = volumeObjects{}
	// StatefulSet controller: pods above the replicas go (all at once: Parallel;
	// recorded from the highest ordinal down).
	for _, ord := range slices.Backward(slices.Sorted(maps.Keys(pods))) {
		if pod := pods[ord]; ord >= replicas && pod.DeletionTimestamp == nil {
			s.observeRemoval(ctx, s.slot(ord), pod, "scaled down")
			if err := k8sClient.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}); client.IgnoreNotFound(err) != nil {
				return err
			}
		}
	}
	// StatefulSet controller: missing pods below the replicas are created.
	for ord := range replicas {
		if _, ok := pods[ord]; ok || s.tokenFile == "" {
			continue
		}
		if err := s.createPod(ctx, sts, s.slot(ord), revision); err != nil {
			return err
		}
	}
	// Kubelet.
	for ord, pod := range pods {
		if err := s.kubelet(ctx, s.slot(ord), pod); err != nil {
			return err
		}
	}
	// PVC protection.
	for ord, sl := range s.slots {
		if err := s.protectClaim(ctx, sl, pods[ord] != nil); err != nil {
			return err
		}
	}
	s.watchUnready(replicas, pods)
	return s.writeStatefulSetStatus(ctx, sts, pods, revision)
}

// mountSecrets writes the cookie and the API token to files, once.
func (s *simulator) mountSecrets(ctx context.Context, mc *v1alpha1.MQTTCluster) error {
	s.mu.Lock()
	done := s.tokenFile != ""
	s.mu.Unlock()
	if done {
		return nil
	}
	values := map[string]string{}
	for file, ref := range map[string][2]string{"cookie": pair(resource.CookieSecret(mc)), "token": pair(resource.APITokenSecret(mc))} {
		sec := &corev1.Secret{}
		if err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: ref[0]}, sec); err != nil {
			return client.IgnoreNotFound(err)
		}
		if len(sec.Data[ref[1]]) == 0 {
			return nil
		}
		values[file] = string(sec.Data[ref[1]])
		if err := os.WriteFile(filepath.Join(s.dir, file), sec.Data[ref[1]], 0o600); err != nil {
			return err
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cookieFile, s.tokenFile = filepath.Join(s.dir, "cookie"), filepath.Join(s.dir, "token")
	s.token = strings.TrimSpace(values["token"])
	return nil
}

func pair(a, b string) [2]string { return [2]string{a, b} }

// slot returns the slot of ordinal ord, creating it with a fixed cluster port (lock held).
func (s *simulator) slot(ord int) *slot {
	if sl, ok := s.slots[ord]; ok {
		return sl
	}
	addr, err := clusterPorts.Next()
	if err != nil {
		panic(err)
	}
	sl := &slot{ordinal: ord, pod: fmt.Sprintf("%s-%d", s.name, ord), clusterAddr: addr, logs: &mqttdproc.Log{}}
	sl.root = filepath.Join(s.dir, sl.pod+"-root")
	s.slots[ord] = sl
	addresses.setCluster(s.ns, sl.pod, addr)
	return sl
}

// createPod creates the pod of a slot as the StatefulSet controller does: first its
// claim (unless it is being deleted: then later), then the pod (lock held).
func (s *simulator) createPod(ctx context.Context, sts *appsv1.StatefulSet, sl *slot, revision string) error {
	if sl.stopping != nil || sl.proc != nil {
		return nil // the previous incarnation's process has not exited yet
	}
	ok, err := s.ensureClaim(ctx, sts, sl)
	if err != nil || !ok {
		return err
	}
	tmpl := sts.Spec.Template.DeepCopy()
	labels := maps.Clone(tmpl.Labels)
	if labels == nil {
		labels = map[string]string{}
	}
	labels[labelRevision] = revision
	labels[labelPodName] = sl.pod
	labels[labelPodIndex] = strconv.Itoa(sl.ordinal)
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: sl.pod, Namespace: s.ns, Labels: labels, Annotations: tmpl.Annotations},
		Spec:       tmpl.Spec,
	}
	pod.Spec.Hostname, pod.Spec.Subdomain, pod.Spec.NodeName = sl.pod, sts.Spec.ServiceName, simulatedNodeName
	for _, claim := range sts.Spec.VolumeClaimTemplates {
		pod.Spec.Volumes = slices.DeleteFunc(pod.Spec.Volumes, func(v corev1.Volume) bool { return v.Name == claim.Name })
		pod.Spec.Volumes = append(pod.Spec.Volumes, corev1.Volume{Name: claim.Name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim.Name + "-" + sl.pod},
		}})
	}
	if err := controllerutil.SetControllerReference(sts, pod, scheme); err != nil {
		return err
	}
	if err := k8sClient.Create(ctx, pod); err != nil {
		return client.IgnoreAlreadyExists(err)
	}
	s.events = append(s.events, podEvent{at: time.Now(), kind: "created", pod: sl.pod, revision: revision})
	return nil
}

// ensureClaim makes the slot's PVC exist; false while an old one is being deleted.
func (s *simulator) ensureClaim(ctx context.Context, sts *appsv1.StatefulSet, sl *slot) (bool, error) {
	if len(sts.Spec.VolumeClaimTemplates) == 0 {
		return false, fmt.Errorf("StatefulSet %s has no volume claim template", sts.Name)
	}
	tmpl := sts.Spec.VolumeClaimTemplates[0]
	name := tmpl.Name + "-" + sl.pod
	pvc := &corev1.PersistentVolumeClaim{}
	err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: name}, pvc)
	switch {
	case err == nil && pvc.DeletionTimestamp != nil:
		return false, nil
	case err == nil:
		if sl.dataDir == "" {
			return true, s.newDataDir(sl)
		}
		return true, nil
	case !apierrors.IsNotFound(err):
		return false, err
	}
	pvc = &corev1.PersistentVolumeClaim{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: s.ns, Labels: maps.Clone(tmpl.Labels)},
		Spec:       *tmpl.Spec.DeepCopy(),
	}
	if err := k8sClient.Create(ctx, pvc); err != nil {
		return false, err
	}
	pvc.Status.Phase = corev1.ClaimBound
	if err := k8sClient.Status().Update(ctx, pvc); err != nil {
		return false, err
	}
	return true, s.newDataDir(sl)
}

// newDataDir gives the slot an empty volume.
func (s *simulator) newDataDir(sl *slot) error {
	dir, err := os.MkdirTemp(s.dir, sl.pod+"-data-")
	if err == nil {
		sl.dataDir = dir
	}
	return err
}

// kubelet runs the pod's container and reports its status (lock held).
func (s *simulator) kubelet(ctx context.Context, sl *slot, pod *corev1.Pod) error {
	if sl.stopping != nil {
		select {
		case <-sl.stopping:
			sl.stopping = nil
		default:
			return nil
		}
	}
	if pod.DeletionTimestamp != nil {
		if sl.observed != pod.UID {
			s.observeRemoval(ctx, sl, pod, "deleted")
		}
		if sl.proc != nil {
			s.stopProcess(sl)
			return nil
		}
		// The container is gone: the kubelet confirms the deletion.
		err := k8sClient.Delete(ctx, pod, client.GracePeriodSeconds(0), client.Preconditions{UID: &pod.UID})
		return client.IgnoreNotFound(err)
	}
	if sl.uid != pod.UID {
		sl.uid, sl.restarts, sl.crashed, sl.lastExit, sl.written = pod.UID, 0, false, 0, ""
	}
	if sl.proc != nil && !sl.proc.running() {
		sl.logs.Add("=== the container exited on its own; restarting it")
		sl.proxy.close()
		s.crashed(sl, sl.proc.exitCode())
		sl.proc, sl.proxy = nil, nil
		addresses.setAPI(s.ns, sl.pod, "", "")
	}
	// A container starts once its volumes are there, and sees them change while it runs.
	mounted, err := s.mountVolumes(ctx, sl, pod)
	if err != nil {
		return err
	}
	// An image the kubelet cannot pull never starts: the pod waits in ImagePullBackOff.
	sl.image = pod.Spec.Containers[0].Image
	sl.pullFailed = strings.HasSuffix(sl.image, unpullableTag)
	if sl.proc == nil && mounted && !sl.pullFailed && sl.heldUID != pod.UID && sl.dataDir != "" && !sl.backingOff() {
		if b, err := s.startProcess(sl); err != nil {
			sl.logs.Add("=== start failed: " + err.Error())
			code := int32(-1)
			if b != nil {
				code = b.exitCode()
			}
			s.crashed(sl, code)
		}
	}
	ready := sl.proc != nil && readyz(ctx, sl.proc.apiAddr)
	return s.writePodStatus(ctx, sl, pod, ready)
}

// crashed records a container that exited on its own (lock held).
func (s *simulator) crashed(sl *slot, code int32) {
	sl.crashed, sl.crashedAt, sl.lastExit = true, time.Now(), code
	sl.restarts++
}

// backingOff reports whether a crashed container waits before its restart: the
// kubelet's back-off, compressed (1 s doubling up to 10 s instead of 10 s to 5 min).
func (sl *slot) backingOff() bool {
	if !sl.crashed {
		return false
	}
	wait := min(time.Second<<min(sl.restarts-1, 4), 10*time.Second)
	return time.Since(sl.crashedAt) < wait
}

// startProcess starts the slot's mqttd and its API proxy (lock held). On failure it
// returns the exited process, if it started.
func (s *simulator) startProcess(sl *slot) (*broker, error) {
	cookieFile := s.cookieFile
	if cookie, ok := s.cookies[sl.pod]; ok {
		cookieFile = filepath.Join(s.dir, "cookie-"+sl.pod)
		if err := os.WriteFile(cookieFile, cookie, 0o600); err != nil {
			return nil, err
		}
		sl.logs.Add("=== the spec gave this container a cookie of its own: " + cookieFile)
	}
	configFile, err := podConfig(sl)
	if err != nil {
		return nil, err
	}
	dataDir := sl.dataDir
	if s.storeOutage || strings.HasSuffix(sl.image, storeFailsTag) {
		// A file where the store should be: mqttd cannot open it and exits with 3. The
		// volume itself is left as it was.
		dataDir = filepath.Join(s.dir, "not-a-store")
		if err := os.WriteFile(dataDir, []byte("not a store"), 0o600); err != nil {
			return nil, err
		}
		sl.logs.Add("=== this container cannot open its store (storage outage or image " + sl.image + ")")
	}
	opts := brokerOptions{
		name: sl.pod, clusterAddr: sl.clusterAddr, dataDir: dataDir,
		cookieFile: cookieFile, tokenFile: s.tokenFile, configFile: configFile,
	}
	// A pod given cluster TLS has the node certificates mounted: it runs with its own
	// pair, as the pod's MQTTD_CLUSTER_TLS_* variables say ($(POD_NAME) expanded).
	tlsDir := filepath.Join(sl.root, resource.ClusterTLSDir)
	if _, err := os.Stat(filepath.Join(tlsDir, resource.NodeCertKey(sl.pod))); err == nil {
		opts.clusterTLS = [3]string{filepath.Join(tlsDir, resource.NodeCertKey(sl.pod)),
			filepath.Join(tlsDir, resource.NodeKeyKey(sl.pod)), filepath.Join(tlsDir, resource.CACertKey)}
	}
	b, err := startBroker(opts, sl.logs)
	if err != nil {
		return b, err
	}
	p, err := startAPIProxy(sl.pod, b.apiAddr, s.calls)
	if err != nil {
		b.kill()
		return nil, err
	}
	sl.proc, sl.proxy, sl.crashed = b, p, false
	addresses.setAPI(s.ns, sl.pod, sl.uid, p.url)
	return b, nil
}

// stopProcess stops the slot's process in the background, as the kubelet does on a
// pod deletion (lock held).
func (s *simulator) stopProcess(sl *slot) {
	proc, proxy := sl.proc, sl.proxy
	sl.proc, sl.proxy = nil, nil
	addresses.setAPI(s.ns, sl.pod, "", "")
	stopped := make(chan struct{})
	sl.stopping = stopped
	go func() {
		defer close(stopped)
		if err := proc.stop(); err != nil {
			sl.logs.Add("=== stop: " + err.Error())
		}
		proxy.close()
	}()
}

// writePodStatus reports the container as the kubelet does, writing only changes.
func (s *simulator) writePodStatus(ctx context.Context, sl *slot, pod *corev1.Pod, ready bool) error {
	running := sl.proc != nil
	digest := fmt.Sprint(running, ready, sl.restarts, sl.crashed, sl.lastExit, sl.pullFailed)
	if digest == sl.written && pod.Status.PodIP != "" {
		return nil
	}
	cond := func(t corev1.PodConditionType, ok bool) corev1.PodCondition {
		st := corev1.ConditionFalse
		if ok {
			st = corev1.ConditionTrue
		}
		return corev1.PodCondition{Type: t, Status: st, LastTransitionTime: metav1.Now()}
	}
	cs := corev1.ContainerStatus{Name: resource.ContainerName, Image: pod.Spec.Containers[0].Image, Ready: ready, RestartCount: sl.restarts, Started: ptr.To(running)}
	switch {
	case running:
		cs.State.Running = &corev1.ContainerStateRunning{StartedAt: metav1.Now()}
	case sl.pullFailed:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ImagePullBackOff"}
	case sl.crashed:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "CrashLoopBackOff"}
	default:
		cs.State.Waiting = &corev1.ContainerStateWaiting{Reason: "ContainerCreating"}
	}
	if sl.restarts > 0 {
		cs.LastTerminationState.Terminated = &corev1.ContainerStateTerminated{ExitCode: sl.lastExit, Reason: "Error"}
	}
	pod.Status = corev1.PodStatus{
		Phase:  corev1.PodRunning,
		HostIP: "127.0.0.1", PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		StartTime: ptr.To(metav1.Now()),
		Conditions: []corev1.PodCondition{
			cond(corev1.PodScheduled, true), cond(corev1.PodInitialized, true),
			cond(corev1.ContainersReady, ready), cond(corev1.PodReady, ready),
		},
		ContainerStatuses: []corev1.ContainerStatus{cs},
	}
	if err := k8sClient.Status().Update(ctx, pod); err != nil {
		return client.IgnoreNotFound(err)
	}
	sl.written = digest
	return nil
}

// protectClaim lets a deleted PVC go once no pod uses it, and removes the volume's
// data with it (lock held).
func (s *simulator) protectClaim(ctx context.Context, sl *slot, hasPod bool) error {
	if sl.dataDir == "" {
		return nil
	}
	pvc := &corev1.PersistentVolumeClaim{}
	err := k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: resource.DataVolume + "-" + sl.pod}, pvc)
	inUse := hasPod || sl.proc != nil || sl.stopping != nil
	switch {
	case apierrors.IsNotFound(err):
		if inUse {
			return nil
		}
		sl.logs.Add("=== the PVC is gone: removing " + sl.dataDir)
		dir := sl.dataDir
		sl.dataDir = ""
		return os.RemoveAll(dir)
	case err != nil:
		return err
	case pvc.DeletionTimestamp != nil && !inUse && controllerutil.ContainsFinalizer(pvc, pvcProtection):
		controllerutil.RemoveFinalizer(pvc, pvcProtection)
		return client.IgnoreNotFound(k8sClient.Update(ctx, pvc))
	}
	return nil
}

// observeRemoval records the broker's last state and the remaining members' views
// as the pod goes away (lock held).
func (s *simulator) observeRemoval(ctx context.Context, sl *slot, pod *corev1.Pod, reason string) {
	sl.observed = pod.UID
	rev := pod.Labels[labelRevision]
	s.events = append(s.events, podEvent{at: time.Now(), kind: "deleted", pod: sl.pod, revision: rev})
	r := removal{pod: sl.pod, reason: reason, views: map[string]*clusterView{}}
	if sl.proc == nil {
		r.err = errNoProcess.Error()
	} else {
		n := &nodeInfo{}
		if err := getJSON(ctx, sl.proc.apiAddr, s.token, "/api/v1/node", n); err != nil {
			r.err = err.Error()
		} else {
			r.node = n
		}
	}
	for _, other := range s.slots {
		if other == sl || other.proc == nil || other.ordinal >= s.replicas {
			continue
		}
		v := &clusterView{}
		if getJSON(ctx, other.proc.apiAddr, s.token, "/api/v1/cluster", v) == nil {
			r.views[other.pod] = v
		}
	}
	s.removals = append(s.removals, r)
}

// watchUnready updates the most ordinals without a ready pod at once (lock held).
func (s *simulator) watchUnready(replicas int, pods map[int]*corev1.Pod) {
	var down []string
	for ord := range replicas {
		if p := pods[ord]; p == nil || p.DeletionTimestamp != nil || !podReady(p) {
			down = append(down, fmt.Sprintf("%s-%d", s.name, ord))
		}
	}
	if len(down) > s.unready.max {
		s.unready = unreadyWatch{max: len(down), when: down}
	}
}

// writeStatefulSetStatus reports the pods as the StatefulSet controller does. With
// OnDelete, currentRevision is not promoted when every pod has been replaced
// (kubernetes/kubernetes#73492, fixed only in recent releases): the operator must
// compare each pod's revision with updateRevision.
func (s *simulator) writeStatefulSetStatus(ctx context.Context, sts *appsv1.StatefulSet, pods map[int]*corev1.Pod, revision string) error {
	st := appsv1.StatefulSetStatus{
		ObservedGeneration: sts.Generation,
		CurrentRevision:    sts.Status.CurrentRevision,
		UpdateRevision:     revision,
		CollisionCount:     sts.Status.CollisionCount,
	}
	if st.CurrentRevision == "" {
		st.CurrentRevision = revision
	}
	for _, p := range pods {
		st.Replicas++
		if p.DeletionTimestamp == nil && podReady(p) {
			st.ReadyReplicas++
			st.AvailableReplicas++
		}
		if p.Labels[labelRevision] == st.CurrentRevision {
			st.CurrentReplicas++
		}
		if p.Labels[labelRevision] == revision {
			st.UpdatedReplicas++
		}
	}
	if sts.Spec.UpdateStrategy.Type != appsv1.OnDeleteStatefulSetStrategyType &&
		st.UpdatedReplicas == st.Replicas && st.ReadyReplicas == st.Replicas {
		st.CurrentRevision, st.CurrentReplicas = revision, st.UpdatedReplicas
	}
	if equality.Semantic.DeepEqual(sts.Status, st) {
		return nil
	}
	sts.Status = st
	return client.IgnoreNotFound(k8sClient.Status().Update(ctx, sts))
}

// templateRevision names the revision of the StatefulSet's pod template.
func templateRevision(sts *appsv1.StatefulSet) string {
	raw, err := json.Marshal(sts.Spec.Template)
	if err != nil {
		panic(err)
	}
	sum := sha256.Sum256(raw)
	return sts.Name + "-" + hex.EncodeToString(sum[:])[:10]
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ordinalOf returns the ordinal of a pod of StatefulSet sts.
func ordinalOf(sts, pod string) (int, bool) {
	rest, ok := strings.CutPrefix(pod, sts+"-")
	if !ok {
		return 0, false
	}
	n, err := strconv.Atoi(rest)
	return n, err == nil && strconv.Itoa(n) == rest
}

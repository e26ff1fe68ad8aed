package lifecycle_test

// What the specs read and change of the simulated cluster: its brokers, their
// processes, logs and data, and what the simulator saw.

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/test/mqttdproc"
)

// replaceStore stops the container of pod ordinal ord, replaces its volume's content
// with a copy of src, and deletes the pod, so that the StatefulSet controller
// recreates it on that volume.
func (s *simulator) replaceStore(ctx context.Context, ord int, src string) {
	GinkgoHelper()
	pod := &corev1.Pod{}
	must(k8sClient.Get(ctx, client.ObjectKey{Namespace: s.ns, Name: fmt.Sprintf("%s-%d", s.name, ord)}, pod), "get the pod")
	s.mu.Lock()
	sl := s.slots[ord]
	sl.heldUID = pod.UID
	if sl.proc != nil {
		s.stopProcess(sl)
	}
	stopping := sl.stopping
	s.mu.Unlock()
	if stopping != nil {
		<-stopping
	}
	s.mu.Lock()
	dir := sl.dataDir
	s.mu.Unlock()
	must(os.RemoveAll(dir), "empty the volume")
	must(copyDir(src, dir), "copy the store")
	sl.logs.Add("=== the spec replaced the volume's content with a copy of " + src)
	must(k8sClient.Delete(ctx, pod, client.Preconditions{UID: &pod.UID}), "delete the pod")
}

// setStoreOutage starts (on) or ends an outage of the storage under every node: while
// it lasts, every container that starts cannot open its store and exits with code 3;
// at its start the running ones die (SIGKILL, as a node losing its disk). The volumes
// keep their data.
func (s *simulator) setStoreOutage(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeOutage = on
	if !on {
		return
	}
	for _, sl := range s.slots {
		if sl.proc != nil {
			sl.logs.Add("=== storage outage: the container dies")
			sl.proc.kill()
		}
	}
}

// setCookie makes the next container of pod start with cookie instead of the
// cluster's (a pod started with another cookie); nil gives it the cluster's again.
// A running container keeps the cookie it started with.
func (s *simulator) setCookie(pod string, cookie []byte) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if cookie == nil {
		delete(s.cookies, pod)
		return
	}
	if s.cookies == nil {
		s.cookies = map[string][]byte{}
	}
	s.cookies[pod] = cookie
}

// broker returns the address of the API and of MQTT of pod ordinal ord's process
// and the API token; empty while it has none.
func (s *simulator) broker(ord int) (api, mqtt, token string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[ord]; sl != nil && sl.proc != nil {
		return sl.proc.apiAddr, sl.proc.mqttAddr, s.token
	}
	return "", "", s.token
}

// mqttsAddr returns the mqtts address of pod ordinal ord's process ("" without one).
func (s *simulator) mqttsAddr(ord int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[ord]; sl != nil && sl.proc != nil {
		return sl.proc.tlsAddr
	}
	return ""
}

// clusterAddr returns the cluster port address of pod ordinal ord ("" without a slot).
func (s *simulator) clusterAddr(ord int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[ord]; sl != nil {
		return sl.clusterAddr
	}
	return ""
}

// pid returns the process ID of ordinal ord's container (0 while it has none).
func (s *simulator) pid(ord int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[ord]; sl != nil && sl.proc != nil {
		return sl.proc.cmd.Process.Pid
	}
	return 0
}

// mounted reads the file at path (as the container sees it) from the volumes of
// ordinal ord's pod.
func (s *simulator) mounted(ord int, path string) ([]byte, error) {
	s.mu.Lock()
	sl := s.slots[ord]
	s.mu.Unlock()
	if sl == nil {
		return nil, errNoProcess
	}
	return os.ReadFile(filepath.Join(sl.root, path))
}

// logs returns the log of ordinal ord's pod, across its containers.
func (s *simulator) logs(ord int) *mqttdproc.Log {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[ord]; sl != nil {
		return sl.logs
	}
	return &mqttdproc.Log{}
}

// dataDir returns the volume directory of ordinal ord ("" when it has none).
func (s *simulator) dataDir(ord int) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if sl := s.slots[ord]; sl != nil {
		return sl.dataDir
	}
	return ""
}

// podEvents returns what the simulator saw happen to pods, in order.
func (s *simulator) podEvents() []podEvent {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// removalsSoFar returns the recorded removals.
func (s *simulator) removalsSoFar() []removal {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.removals)
}

// resetUnready starts a new unavailability watch.
func (s *simulator) resetUnready() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.unready = unreadyWatch{}
}

// mostUnready returns the most pods that were unavailable at once since the reset.
func (s *simulator) mostUnready() unreadyWatch {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.unready
}

// report is what a failed spec prints: each pod's log tail, the operator's API
// calls, the pod events and the simulator's last error.
func (s *simulator) report() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	var b strings.Builder
	ords := slices.Sorted(maps.Keys(s.slots))
	for _, ord := range ords {
		sl := s.slots[ord]
		fmt.Fprintf(&b, "--- last %d log lines of %s ---\n%s\n", logTail, sl.pod, sl.logs.Tail(logTail))
	}
	b.WriteString("--- the operator's API calls ---\n")
	for _, c := range s.calls.all() {
		fmt.Fprintln(&b, c)
	}
	b.WriteString("--- pods ---\n")
	for _, e := range s.events {
		fmt.Fprintf(&b, "%s %s %s %s\n", e.at.Format("15:04:05.000"), e.kind, e.pod, e.revision)
	}
	for _, r := range s.removals {
		fmt.Fprintf(&b, "removal of %s (%s): node %+v err %q views %d\n", r.pod, r.reason, r.node, r.err, len(r.views))
	}
	fmt.Fprintf(&b, "--- simulator's last error: %s\n", s.lastErr)
	return b.String()
}

package lifecycle_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/eclipse/paho.golang/paho"
	mqtt "github.com/eclipse/paho.mqtt.golang"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/mqtt-operator/mqtt-operator/api/v1alpha1"
	"github.com/mqtt-operator/mqtt-operator/controllers/resource"
)

// MQTT reason codes the specs expect.
const (
	connackBadCredentials311 byte = 0x04 // MQTT 3.1.1 CONNACK: bad user name or password
	connackNotAuthorized311  byte = 0x05 // MQTT 3.1.1 CONNACK: not authorized
	reasonBadCredentials     byte = 0x86 // MQTT 5: bad user name or password
	reasonNotAuthorized      byte = 0x87 // MQTT 5: not authorized
)

var _ = Describe("client authentication and authorization with real brokers", func() {
	It("refuses anonymous clients on every pod, and applies users and ACL edits without restarting a pod", func(ctx SpecContext) {
		e := newEnv(ctx, 3, func(mc *v1alpha1.MQTTCluster) {
			// No ACL rule yet: the first one must arrive by reload too.
			mc.Spec.Auth = &v1alpha1.AuthSpec{AllowAnonymous: ptr.To(false)}
		})
		e.expectMembers(ctx, 3)
		e.expectReadyStatus(ctx, 3)
		user, password := e.generatedUser(ctx)

		By("refusing anonymous clients and a wrong password on every pod, letting the generated user in")
		for ord := range 3 {
			_, addr, _ := e.sim.broker(ord)
			Expect(addr).NotTo(BeEmpty())
			Expect(connect311(addr, "", "")).To(Equal(connackNotAuthorized311), "anonymous MQTT 3.1.1 on c-%d", ord)
			Expect(connect5(addr, "", "")).To(Equal(reasonNotAuthorized), "anonymous MQTT 5 on c-%d", ord)
			Expect(connect311(addr, user, password+"x")).To(Equal(connackBadCredentials311), "wrong password on c-%d", ord)
			Expect(connect5(addr, user, password+"x")).To(Equal(reasonBadCredentials), "wrong password on c-%d", ord)
			Expect(connect311(addr, user, password)).To(BeZero(), "the generated user on c-%d", ord)
			Expect(connect5(addr, user, password)).To(BeZero(), "the generated user on c-%d", ord)
		}
		before := e.podIdentities(ctx, 3)
		generation := e.statefulSet(ctx).Generation

		By("letting a user added to the Secret in on every pod, with no pod restarted")
		for ord := range 3 {
			_, addr, _ := e.sim.broker(ord)
			Expect(connect5(addr, "bob", "bob's password")).To(Equal(reasonBadCredentials), "bob before he is added, on c-%d", ord)
		}
		line, err := resource.UsersLine("bob", "bob's password")
		Expect(err).NotTo(HaveOccurred())
		users := &corev1.Secret{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: clusterName + "-users"}, users)).To(Succeed())
		users.Data[resource.UsersKey] = append(users.Data[resource.UsersKey], line...)
		Expect(k8sClient.Update(ctx, users)).To(Succeed())
		Eventually(ctx, func(g Gomega) {
			for ord := range 3 {
				g.Expect(e.sim.mounted(ord, resource.UsersDir+"/"+resource.UsersKey)).To(ContainSubstring("bob:"), "the users file of c-%d", ord)
			}
		}).Should(Succeed(), "the simulated kubelet updates the mounted users file")
		Eventually(ctx, func(g Gomega) {
			for ord := range 3 {
				_, addr, _ := e.sim.broker(ord)
				g.Expect(connect311(addr, "bob", "bob's password")).To(BeZero(), "bob on c-%d", ord)
				g.Expect(connect5(addr, "bob", "bob's password")).To(BeZero(), "bob on c-%d", ord)
			}
		}).Should(Succeed())
		Expect(connect5(e.addr(0), user, password)).To(BeZero(), "the generated user is still in")
		Expect(e.podIdentities(ctx, 3)).To(Equal(before), "pods, restart counts and processes after the users edit")

		By("applying the first ACL rules on every pod, with no pod restarted")
		e.patch(ctx, func(mc *v1alpha1.MQTTCluster) {
			mc.Spec.Auth.ACL = []v1alpha1.ACLRule{{Username: "bob", Topic: "private/#", Access: "publish", Action: "deny"},
				{Username: "*", Topic: "#", Access: "all", Action: "allow"}}
		})
		Eventually(ctx, func(g Gomega) {
			for ord := range 3 {
				g.Expect(publish5(e.addr(ord), "bob", "bob's password", "private/x")).To(Equal(reasonNotAuthorized), "bob publishing on c-%d", ord)
			}
		}).Should(Succeed())
		for ord := range 3 {
			Expect(publish5(e.addr(ord), user, password, "private/x")).To(BeNumerically("<", 0x80), "the generated user publishing on c-%d", ord)
			Expect(publish5(e.addr(ord), "bob", "bob's password", "public/x")).To(BeNumerically("<", 0x80), "bob publishing elsewhere on c-%d", ord)
		}
		Expect(e.podIdentities(ctx, 3)).To(Equal(before), "pods, restart counts and processes after the ACL edit")
		Expect(e.statefulSet(ctx).Generation).To(Equal(generation), "the StatefulSet was not rewritten")
	}, SpecTimeout(6*time.Minute))
})

// generatedUser reads the user the operator generated in "<cluster>-users".
func (e *env) generatedUser(ctx context.Context) (user, password string) {
	GinkgoHelper()
	s := &corev1.Secret{}
	Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: clusterName + "-users"}, s)).To(Succeed())
	user, password = string(s.Data[resource.UsernameKey]), string(s.Data[resource.PasswordKey])
	Expect(user).NotTo(BeEmpty())
	Expect(password).NotTo(BeEmpty())
	return user, password
}

// addr is the MQTT address of pod ordinal ord's process.
func (e *env) addr(ord int) string {
	GinkgoHelper()
	_, addr, _ := e.sim.broker(ord)
	Expect(addr).NotTo(BeEmpty(), "%s-%d has no running broker", clusterName, ord)
	return addr
}

// podIdentity is what changes when a pod or its container is restarted.
type podIdentity struct {
	UID      types.UID
	Restarts int32
	PID      int
}

// podIdentities returns the identity of the first n pods.
func (e *env) podIdentities(ctx context.Context, n int) []podIdentity {
	GinkgoHelper()
	out := make([]podIdentity, n)
	for ord := range n {
		pod := &corev1.Pod{}
		Expect(k8sClient.Get(ctx, client.ObjectKey{Namespace: e.ns, Name: podNames(n)[ord]}, pod)).To(Succeed())
		out[ord] = podIdentity{UID: pod.UID, PID: e.sim.pid(ord)}
		for _, cs := range pod.Status.ContainerStatuses {
			out[ord].Restarts += cs.RestartCount
		}
		Expect(out[ord].PID).NotTo(BeZero(), "%s runs a broker", pod.Name)
	}
	return out
}

// clientIDs makes every connection's client ID unique: client-ID ownership is on
// when anonymous clients are refused.
var clientIDs atomic.Int64

func nextClientID(user string) string {
	return fmt.Sprintf("auth-%s-%d", user, clientIDs.Add(1))
}

// connect311 connects an MQTT 3.1.1 client (paho.mqtt.golang) with the credentials
// (none when user is "") and returns the CONNACK return code; it disconnects at once.
func connect311(addr, user, password string) (byte, error) {
	opts := mqtt.NewClientOptions().AddBroker("tcp://" + addr).SetClientID(nextClientID(user)).
		SetProtocolVersion(4).SetCleanSession(true).SetConnectTimeout(mqttTimeout).
		SetAutoReconnect(false).SetConnectRetry(false)
	if user != "" {
		opts.SetUsername(user).SetPassword(password)
	}
	c := mqtt.NewClient(opts)
	tok := c.Connect()
	if !tok.WaitTimeout(mqttTimeout) {
		return 0, fmt.Errorf("no CONNACK from %s within %v", addr, mqttTimeout)
	}
	ct, ok := tok.(*mqtt.ConnectToken)
	if !ok {
		return 0, fmt.Errorf("connect token %T", tok)
	}
	code := ct.ReturnCode()
	if code == 0 {
		c.Disconnect(100)
		return 0, nil
	}
	if code >= 0x80 { // the client's own codes: network error, protocol violation
		return code, fmt.Errorf("connect to %s: %w", addr, tok.Error())
	}
	return code, nil
}

// connect5 connects an MQTT 5 client (paho.golang) with the credentials (none when
// user is "") and returns the CONNACK reason code; it disconnects at once.
func connect5(addr, user, password string) (byte, error) {
	c, reason, err := dial5(addr, user, password)
	if c != nil {
		_ = c.Disconnect(&paho.Disconnect{})
	}
	return reason, err
}

// publish5 publishes a QoS 1 message as user and returns the PUBACK reason code.
func publish5(addr, user, password, topic string) (byte, error) {
	c, reason, err := dial5(addr, user, password)
	if err != nil {
		return 0, err
	}
	if c == nil {
		return 0, fmt.Errorf("connect as %q refused: reason 0x%02X", user, reason)
	}
	defer func() { _ = c.Disconnect(&paho.Disconnect{}) }()
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	resp, err := c.Publish(ctx, &paho.Publish{Topic: topic, QoS: 1, Payload: []byte("auth spec")})
	if resp != nil {
		return resp.ReasonCode, nil
	}
	return 0, err
}

// dial5 connects an MQTT 5 client; a refused CONNACK is a reason code, not an error,
// and returns no client.
func dial5(addr, user, password string) (*paho.Client, byte, error) {
	conn, err := net.DialTimeout("tcp", addr, mqttTimeout)
	if err != nil {
		return nil, 0, err
	}
	c := paho.NewClient(paho.ClientConfig{Conn: conn, PacketTimeout: mqttTimeout, OnClientError: func(error) {}})
	cp := &paho.Connect{ClientID: nextClientID(user), CleanStart: true, KeepAlive: 30}
	if user != "" {
		cp.Username, cp.UsernameFlag = user, true
		cp.Password, cp.PasswordFlag = []byte(password), true
	}
	ctx, cancel := context.WithTimeout(context.Background(), mqttTimeout)
	defer cancel()
	ca, err := c.Connect(ctx, cp)
	switch {
	case err == nil:
		return c, 0, nil
	case ca != nil && ca.ReasonCode >= 0x80:
		_ = conn.Close()
		return nil, ca.ReasonCode, nil
	default:
		_ = conn.Close()
		return nil, 0, errors.Join(fmt.Errorf("connect to %s", addr), err)
	}
}

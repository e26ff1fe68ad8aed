package store

import "github.com/mqtt-operator/mqtt-operator/broker/session"

// The record formats of the store double as the wire format between cluster nodes:
// a message travels as the same MQTT 5 PUBLISH record it is stored as, a session as
// the same snapshot record.

// EncodeMessage returns the stored form of m.
func EncodeMessage(m *session.Message) []byte { return encodeMessage(m) }

// DecodeMessage reads a message written by EncodeMessage.
func DecodeMessage(b []byte) (*session.Message, error) { return decodeMessage(b) }

// EncodeSession returns the stored form of a session snapshot.
func EncodeSession(s session.Snapshot) ([]byte, error) { return encodeSession(s) }

// DecodeSession reads a snapshot written by EncodeSession.
func DecodeSession(b []byte) (session.Snapshot, error) { return decodeSession(b) }

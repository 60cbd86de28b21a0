package inferencerpc

import (
	"context"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	pb "github.com/edgellm/edgellm/proto/edgellm/v1"
)

// serveGen serves gen on a fresh socket and returns a client of it.
func serveGen(t *testing.T, gen Generator) (*Server, pb.InferenceClient) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "s.sock")
	lis, err := ListenUnix(sock)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("socket mode %v (%v); want 0600", fi.Mode(), err)
	}
	s := New(gen)
	srv := grpc.NewServer()
	pb.RegisterInferenceServer(srv, s)
	go srv.Serve(lis)
	t.Cleanup(func() { Stop(srv, time.Second) })
	conn, err := grpc.NewClient("unix:"+sock, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return s, pb.NewInferenceClient(conn)
}

// collect reads a Generate stream to its end: texts and the final status.
func collect(stream grpc.ServerStreamingClient[pb.GenerateResponse]) ([]string, error) {
	var texts []string
	for {
		r, err := stream.Recv()
		if errors.Is(err, io.EOF) {
			return texts, nil
		}
		if err != nil {
			return texts, err
		}
		texts = append(texts, r.GetText())
	}
}

// blockingGen streams one token, then waits for ctx; started gets the id.
func blockingGen(started chan<- string) Generator {
	return func(ctx context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
		if err := onResp(&pb.GenerateResponse{RequestId: req.GetRequestId(), Text: "a"}); err != nil {
			return err
		}
		started <- req.GetRequestId()
		<-ctx.Done()
		return ctx.Err()
	}
}

func TestServer(t *testing.T) {
	t.Run("streams and keeps the generator's status", func(t *testing.T) {
		_, c := serveGen(t, func(_ context.Context, req *pb.GenerateRequest, onResp func(*pb.GenerateResponse) error) error {
			if req.GetModel() == "bad" {
				return status.Error(codes.InvalidArgument, "bad model")
			}
			for _, s := range []string{"x", "y"} {
				if err := onResp(&pb.GenerateResponse{Text: s}); err != nil {
					return err
				}
			}
			return nil
		})
		stream, err := c.Generate(t.Context(), &pb.GenerateRequest{Model: "m"})
		if err != nil {
			t.Fatal(err)
		}
		if texts, err := collect(stream); err != nil || len(texts) != 2 {
			t.Fatalf("texts %v, err %v; want two", texts, err)
		}
		stream, _ = c.Generate(t.Context(), &pb.GenerateRequest{Model: "bad"})
		if _, err := collect(stream); status.Code(err) != codes.InvalidArgument {
			t.Fatalf("err %v; want INVALID_ARGUMENT", err)
		}
	})
	t.Run("an error without a status is UNKNOWN with its text", func(t *testing.T) {
		_, c := serveGen(t, func(context.Context, *pb.GenerateRequest, func(*pb.GenerateResponse) error) error {
			return errors.New("boom")
		})
		stream, _ := c.Generate(t.Context(), &pb.GenerateRequest{})
		if _, err := collect(stream); status.Code(err) != codes.Unknown || status.Convert(err).Message() != "boom" {
			t.Fatalf("err %v; want UNKNOWN boom", err)
		}
	})
	t.Run("abort, duplicate ids, shutdown", func(t *testing.T) {
		started := make(chan string, 4)
		s, c := serveGen(t, blockingGen(started))
		stream, err := c.Generate(t.Context(), &pb.GenerateRequest{RequestId: "r1"})
		if err != nil {
			t.Fatal(err)
		}
		if id := <-started; id != "r1" {
			t.Fatalf("started %q", id)
		}
		dup, _ := c.Generate(t.Context(), &pb.GenerateRequest{RequestId: "r1"})
		if _, err := collect(dup); status.Code(err) != codes.AlreadyExists {
			t.Errorf("a second r1: %v; want ALREADY_EXISTS", err)
		}
		if r, err := c.Abort(t.Context(), &pb.AbortRequest{RequestId: "r1"}); err != nil || !r.GetAborted() {
			t.Fatalf("Abort = %v, %v", r, err)
		}
		if _, err := collect(stream); status.Code(err) != codes.Canceled {
			t.Errorf("aborted stream: %v; want CANCELLED", err)
		}
		if r, _ := c.Abort(t.Context(), &pb.AbortRequest{RequestId: "r1"}); r.GetAborted() {
			t.Error("Abort of a finished request said aborted")
		}

		running, _ := c.Generate(t.Context(), &pb.GenerateRequest{}) // an id is made up
		if id := <-started; id == "" {
			t.Error("no request id was filled in")
		}
		s.Shutdown()
		if _, err := collect(running); status.Code(err) != codes.Unavailable {
			t.Errorf("running at shutdown: %v; want UNAVAILABLE", err)
		}
		late, _ := c.Generate(t.Context(), &pb.GenerateRequest{})
		if _, err := collect(late); status.Code(err) != codes.Unavailable {
			t.Errorf("after shutdown: %v; want UNAVAILABLE", err)
		}
	})
}

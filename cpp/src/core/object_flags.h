// Flags stored beside every object's bytes: how the Python layer must read it.
// An error object's bytes are either a pickled exception (kPickledError) or,
// for errors raised by the C++ runtime itself, a UTF-8 message plus one of the
// system-error bits, which the Python layer maps to fleet.exceptions classes.
#pragma once

#include <cstdint>

namespace fleet {

enum ObjectFlags : uint32_t {
  kFlagNone = 0,
  kFlagPickledError = 1u << 0,   // bytes = pickled exception (RayTaskError...)
  kFlagWorkerCrashed = 1u << 1,  // bytes = message
  kFlagObjectLost = 1u << 2,
  kFlagOwnerDied = 1u << 3,
  kFlagTaskCancelled = 1u << 4,
  kFlagSystemError = 1u << 5,
  // The actor running the call is dead: bytes = message, or (with
  // kFlagPickledError) the pickled error its constructor raised.
  kFlagActorDied = 1u << 6,
  // Not an error: the task is a streaming generator; its value is the count
  // of items it produced.
  kFlagGeneratorEnd = 1u << 7,
  // Not an error: the value lives in a node's shared-memory object store;
  // bytes = StoreDescriptor (core/value_format.h). Read it with StoreClient.
  kFlagInStore = 1u << 8,
  // Not an error: an actor's handle object (bytes = the actor id), owned by
  // the actor's creator and borrowed by the processes holding its handles.
  // When it is let go, the actor exits.
  kFlagActorHandle = 1u << 9,
};

constexpr uint32_t kErrorFlags = kFlagPickledError | kFlagWorkerCrashed | kFlagObjectLost |
                                 kFlagOwnerDied | kFlagTaskCancelled | kFlagSystemError |
                                 kFlagActorDied;

}  // namespace fleet

// Open MPI's handles are macros over the addresses of globals (MPI_COMM_WORLD is
// &ompi_mpi_comm_world), which Swift does not import; these accessors return them.
#include <mpi.h>

static inline MPI_Comm ptmpi_comm_world(void) { return MPI_COMM_WORLD; }
static inline MPI_Datatype ptmpi_float(void) { return MPI_FLOAT; }
static inline MPI_Datatype ptmpi_int(void) { return MPI_INT; }
static inline MPI_Datatype ptmpi_datatype_null(void) { return MPI_DATATYPE_NULL; }
static inline MPI_Op ptmpi_max(void) { return MPI_MAX; }
static inline void *ptmpi_in_place(void) { return MPI_IN_PLACE; }
static inline MPI_Status *ptmpi_status_ignore(void) { return MPI_STATUS_IGNORE; }
static inline MPI_Status *ptmpi_statuses_ignore(void) { return MPI_STATUSES_IGNORE; }

# The transfer service's persistence: the job queue in PostgreSQL and safe
# writes into the sidecar store. Included from services/transfer/CMakeLists.txt
# (and by the tests); paths are absolute so any directory may include it.
if(NOT TARGET transfer_store)
  add_library(transfer_store STATIC
    ${CMAKE_CURRENT_LIST_DIR}/job_migrations.cc
    ${CMAKE_CURRENT_LIST_DIR}/job_store.cc
    ${CMAKE_CURRENT_LIST_DIR}/store_writer.cc
  )
  target_link_libraries(transfer_store PUBLIC sidecar_common)
endif()

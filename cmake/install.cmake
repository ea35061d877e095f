# Install and export: another project does find_package(fp4moe) and links fp4moe::fp4moe.
# Installed: the public headers, the static libraries (fp4moe = selection + C++/C APIs,
# fp4moe_core, and fp4moe_cuda when built), the CMake package files, and the CLI.
include(GNUInstallDirs)
include(CMakePackageConfigHelpers)

set(_fp4moe_export_targets fp4moe_api fp4moe_core)
if(TARGET fp4moe_cuda)
  list(APPEND _fp4moe_export_targets fp4moe_cuda)
  # Its src/ include directory is for building only: keep it out of the installed interface.
  get_target_property(_fp4moe_cuda_inc fp4moe_cuda INTERFACE_INCLUDE_DIRECTORIES)
  if(_fp4moe_cuda_inc)
    set(_fp4moe_cuda_build_inc "")
    foreach(_d IN LISTS _fp4moe_cuda_inc)
      if(_d MATCHES "^\\$<")
        list(APPEND _fp4moe_cuda_build_inc "${_d}")
      else()
        list(APPEND _fp4moe_cuda_build_inc "$<BUILD_INTERFACE:${_d}>")
      endif()
    endforeach()
    set_property(TARGET fp4moe_cuda PROPERTY INTERFACE_INCLUDE_DIRECTORIES "${_fp4moe_cuda_build_inc}")
  endif()
endif()
set_target_properties(fp4moe_core PROPERTIES EXPORT_NAME fp4moe_core)

install(TARGETS ${_fp4moe_export_targets} EXPORT fp4moeTargets
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(DIRECTORY ${CMAKE_CURRENT_SOURCE_DIR}/include/fp4moe DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(EXPORT fp4moeTargets NAMESPACE fp4moe:: DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fp4moe)

set(FP4MOE_EXPORT_CUDA ${FP4MOE_HAVE_CUDA})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/fp4moeConfig.cmake.in
  ${CMAKE_CURRENT_BINARY_DIR}/fp4moeConfig.cmake
  INSTALL_DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fp4moe)
write_basic_package_version_file(${CMAKE_CURRENT_BINARY_DIR}/fp4moeConfigVersion.cmake
  VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_CURRENT_BINARY_DIR}/fp4moeConfig.cmake ${CMAKE_CURRENT_BINARY_DIR}/fp4moeConfigVersion.cmake
  DESTINATION ${CMAKE_INSTALL_LIBDIR}/cmake/fp4moe)

# The CLI target is defined after this file is included.
function(_fp4moe_install_cli)
  if(TARGET fp4moe)
    install(TARGETS fp4moe RUNTIME DESTINATION ${CMAKE_INSTALL_BINDIR})
  endif()
endfunction()
cmake_language(DEFER CALL _fp4moe_install_cli)
